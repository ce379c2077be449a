"""Deployments: a model (a base, a registered fine-tune, an OpenAI ``ft:`` name) served by worker
processes that the control plane starts and watches (see ``replicas.py``).

A registered fine-tune that is a LoRA adapter deploys as its base + that adapter, the adapter being the
deployment's default model id; the base stays callable beside it. Nothing here imports torch: the
adapter's base is read from its JSON files.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from tuneforge.errors import ConfigError, ConflictError, NotFoundError
from tuneforge.models.inference import uses_dora
from tuneforge.names import check_name

from . import event_codes, registry
from .context import Platform
from .db import Deployment, DeploymentEvent, Job, RegisteredModel, by_id_or_name

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # what `tuneforge serve` accepts as an id
ENGINES = ("auto", "transformers", "vllm")
EVENT_KINDS = ("created", "starting", "ready", "failed", "restarted", "stopped", "scaled")


@dataclass
class Resolved:
    """What a worker is started with and which names reach which of its model ids."""

    base: str  # a store name or a model folder
    base_id: str
    adapters: dict[str, dict] = field(default_factory=dict)  # alias -> {"ref", "path"}
    default_model_id: str = ""
    aliases: dict[str, str] = field(default_factory=dict)  # registered/ft name -> worker model id


def _model_id(text: str) -> str:
    """A name a worker accepts as a model id (``ft:a:b:c`` → ``ft-a-b-c``)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:100]
    return out or "model"


def _is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def _stored_base(name: str) -> bool:
    from tuneforge.models.store import stored_model_dir

    return stored_model_dir(name) is not None


def _registered(ctx: Platform, ref: str) -> RegisteredModel | None:
    """``name``, ``name@N`` or ``name:vN`` (OpenAI ``ft:`` names hold colons: the exact name wins)."""
    candidates = [ref]
    m = re.match(r"^(.*):v(\d+)$", ref)
    if m:
        candidates.append(f"{m.group(1)}@{m.group(2)}")
    for candidate in candidates:
        try:
            return registry.resolve(ctx, candidate)
        except NotFoundError:
            continue
    return None


def _adapter_base_name(row: RegisteredModel, path: Path) -> str:
    if row.base_model and _stored_base(row.base_model):
        return row.base_model
    for name, key in (("tuneforge.json", "base_model"), ("adapter_config.json", "base_model_name_or_path")):
        try:
            return json.loads((path / name).read_text())[key]
        except (OSError, ValueError, KeyError):
            continue
    raise ConfigError(f"{path}: cannot tell which base model this adapter was trained on")


def resolve_model(ctx: Platform, ref: str) -> Resolved:
    if not isinstance(ref, str) or not ref.strip() or len(ref) > 500:
        raise ConfigError("model: name a stored base model, a registered model or an ft: model")
    row = _registered(ctx, ref)
    if row is not None:
        path = Path(row.path)
        if not path.is_dir():
            raise NotFoundError(f"registered model {row.name}@{row.version}: its files at {path} are gone")
        from tuneforge.models.reward import refuse_reward_model

        refuse_reward_model(path, f"{row.name}@{row.version}")
        alias = _model_id(row.name)
        names = {row.name: alias, f"{row.name}@{row.version}": alias}
        if _is_adapter(path):
            base = _adapter_base_name(row, path)
            base_id = base if MODEL_ID_RE.match(base) else _model_id(Path(base).name)
            if alias == base_id:
                alias = f"{alias}-ft"
                names = dict.fromkeys(names, alias)
            return Resolved(
                base, base_id, {alias: {"ref": ref, "path": str(path)}}, alias, {**names, ref: alias}
            )
        return Resolved(str(path), alias, {}, alias, {**names, ref: alias})  # full weights
    if _stored_base(ref):
        return Resolved(ref, ref, {}, ref, {})
    raise NotFoundError(
        f"no model {ref!r}: name a stored base model (`tuneforge models list`), a registered model "
        "(name, name@N or name:vN) or an OpenAI fine-tuned name (ft:…)"
    )


def _add_adapters(ctx: Platform, resolved: Resolved, adapters: dict[str, str]) -> None:
    for alias, ref in adapters.items():
        if not MODEL_ID_RE.match(alias or ""):
            raise ConfigError(f"adapter alias {alias!r}: use letters, digits, '.', '_' and '-'")
        if alias == resolved.base_id or alias in resolved.adapters:
            raise ConfigError(f"adapter alias {alias!r} is already a model id of this deployment")
        row = _registered(ctx, ref)
        if row is None:
            raise NotFoundError(f"adapter {alias}={ref}: no registered model {ref!r}")
        path = Path(row.path)
        if not _is_adapter(path):
            raise ConfigError(f"adapter {alias}={ref}: {row.name}@{row.version} is not a LoRA adapter")
        base = _adapter_base_name(row, path)
        if base != resolved.base and Path(base).name != Path(resolved.base).name:
            raise ConfigError(
                f"adapter {alias}={ref} was trained on {base}, not on {resolved.base}: deploy it separately"
            )
        resolved.adapters[alias] = {"ref": ref, "path": str(path)}
        resolved.aliases.setdefault(ref, alias)
        resolved.aliases.setdefault(row.name, alias)


def _derive_name(ctx: Platform, ref: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", ref.lower().split("@")[0]).strip("-")[:50] or "deployment"
    if not stem[0].isalnum():
        stem = f"d-{stem}"
    with ctx.store.reading() as s:
        taken = set(s.scalars(select(Deployment.name)))
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    return name


def add_event(s, dep_id: str, event: str, message: str = "", code: str | None = None, **data) -> None:
    """An event of the deployment; with ``code`` (platform/event_codes.py) its message is built from the code
    and ``data`` (its params), and the console can say it in the user's language."""
    if code is not None:
        message, data = event_codes.message(code, data), {**data, "code": code}
    s.add(DeploymentEvent(deployment_id=dep_id, time=time.time(), event=event, message=message, data=data))


def _event_dict(e: DeploymentEvent) -> dict:
    """An event as the API answers it: its data's fields, and its ``code`` and ``params`` (those fields)."""
    params = {k: v for k, v in (e.data or {}).items() if k != "code"}
    code = (e.data or {}).get("code")
    return {"time": e.time, "event": e.event, "message": e.message, **params, "code": code, "params": params}


def create(
    ctx: Platform,
    model: str,
    name: str | None = None,
    adapters: dict[str, str] | None = None,
    engine: str = "auto",
    replicas: int = 1,
    options: dict | None = None,
) -> Deployment:
    resolved = resolve_model(ctx, model)
    _add_adapters(ctx, resolved, adapters or {})
    dora = [alias for alias, a in resolved.adapters.items() if uses_dora(a["path"])]
    if dora and len(resolved.adapters) > 1:
        raise ConfigError(
            f"adapter {dora[0]} is a DoRA fine-tune: it is served merged into its base, alone (peft cannot "
            "batch DoRA with other adapters); deploy it without --adapter"
        )
    if dora and engine == "vllm":
        raise ConfigError(
            f"adapter {dora[0]} is a DoRA fine-tune, which vLLM does not serve: use --engine transformers"
        )
    if dora:  # also when given as --adapter on a stored base: the merged fine-tune is what answers
        resolved.default_model_id = dora[0]
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    if name is not None and not NAME_RE.match(name):
        raise ConfigError(f"name {name!r}: lowercase letters, digits and '-' (at most 63), starting alnum")
    name = check_name(name or _derive_name(ctx, model), "deployment", max_length=63)
    row = Deployment(
        id=f"dep-{secrets.token_hex(6)}",
        name=name,
        model=model,
        base_model=resolved.base,
        adapters=resolved.adapters,
        default_model_id=resolved.default_model_id,
        # a DoRA fine-tune is merged into its base in the worker: the base is not served beside it
        aliases={**({} if dora else {"__base__": resolved.base_id}), **resolved.aliases},
        engine=engine,
        replicas=replicas,
        options={k: v for k, v in (options or {}).items() if v is not None},
        state="starting",
        desired="running",
        created_at=time.time(),
        requests=0,
    )
    with ctx.store.session() as s:
        if s.scalars(select(Deployment).where(Deployment.name == name)).first() is not None:
            raise ConflictError(f"a deployment named {name!r} exists; pick another --name or rm it")
        s.add(row)
        s.flush()
        add_event(s, row.id, "created", code="created", model=model, name=name)
        add_event(s, row.id, "starting", code="starting", replicas=replicas)
    wake(ctx)
    return row


def wake(ctx: Platform) -> None:
    ctx.deployments.wake()


def get(ctx: Platform, name: str) -> Deployment:
    """A deployment by name, or by id (``dep-…``)."""
    with ctx.store.reading() as s:
        row = by_id_or_name(s, Deployment, name)
    if row is None:
        raise NotFoundError(f"no deployment {name!r}; see `tuneforge deployments list`")
    return row


def list_all(ctx: Platform) -> list[Deployment]:
    with ctx.store.reading() as s:
        return list(s.scalars(select(Deployment).order_by(Deployment.created_at.desc())))


def stop(ctx: Platform, name: str) -> Deployment:
    row = get(ctx, name)
    with ctx.store.session() as s:
        r = s.get(Deployment, row.id)
        r.desired = "stopped"
        if r.state != "stopped":
            r.state = "stopped"
            add_event(s, r.id, "stopped", code="stopped_by_request")
    ctx.deployments.terminate(row.id)
    return get(ctx, name)


def start(ctx: Platform, name: str) -> Deployment:
    row = get(ctx, name)
    with ctx.store.session() as s:
        r = s.get(Deployment, row.id)
        if r.state in ("stopped", "failed"):
            r.desired, r.state, r.last_error = "running", "starting", None
            add_event(s, r.id, "starting", code="started_by_request")
    ctx.deployments.reset(row.id)
    wake(ctx)
    return get(ctx, name)


MAX_REPLICAS = 16


def scale(ctx: Platform, name: str, replicas: int) -> Deployment:
    """Change the number of workers of a running or stopped deployment; the supervisor starts the new
    replicas (each a cold start, out of rotation until ready) or stops the highest-numbered ones."""
    if not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"replicas: a number from 1 to {MAX_REPLICAS}")
    row = get(ctx, name)
    if replicas != row.replicas:
        with ctx.store.session() as s:
            r = s.get(Deployment, row.id)
            add_event(s, r.id, "scaled", code="scaled", before=r.replicas, replicas=replicas)
            r.replicas = replicas
        wake(ctx)
    return get(ctx, name)


def remove(ctx: Platform, name: str) -> None:
    row = get(ctx, name)
    # a promotion's candidate and the standby kept for rollback go with the deployment they serve
    for linked in ((row.rollout or {}).get("candidate"), (row.rollout or {}).get("previous")):
        if linked and linked != row.id:
            with contextlib.suppress(NotFoundError):
                remove(ctx, linked)
    with ctx.store.session() as s:
        r = s.get(Deployment, row.id)
        r.desired = "stopped"
    ctx.deployments.terminate(row.id)
    with ctx.store.session() as s:
        r = s.get(Deployment, row.id)
        if r is not None:
            s.delete(r)
    shutil.rmtree(folder(ctx, row.id), ignore_errors=True)


def events(ctx: Platform, name: str) -> list[dict]:
    row = get(ctx, name)
    with ctx.store.reading() as s:
        q = select(DeploymentEvent).where(DeploymentEvent.deployment_id == row.id)
        rows = list(s.scalars(q.order_by(DeploymentEvent.id)))
    return [_event_dict(e) for e in rows]


def folder(ctx: Platform, dep_id: str) -> Path:
    return ctx.home / "deployments" / dep_id


def model_ids(row: Deployment) -> list[str]:
    """Every model id the deployment's worker answers to: the base, then the adapters."""
    ids = [row.aliases["__base__"]] if "__base__" in row.aliases else []
    ids += [a for a in row.adapters if a not in ids]
    return ids or [row.default_model_id]


def in_use(ctx: Platform, model: str) -> str | None:
    """The deployment that serves a stored model or a registered model (name or name@N), if any."""
    for row in list_all(ctx):
        names = {row.base_model, Path(row.base_model).name, row.model, *row.aliases}
        names |= {a["ref"] for a in row.adapters.values()}
        if model in names or model.split("@")[0] in {n.split("@")[0] for n in names}:
            return row.name
    return None


def model_in_use(ctx: Platform, name: str) -> str | None:
    """A deployment serving a stored model (``deployment NAME``), or a queued/running job on it (its id)."""
    deployment = in_use(ctx, name)
    if deployment:
        return f"deployment {deployment}"
    with ctx.store.reading() as s:
        for job in s.scalars(select(Job).where(Job.state.in_(("queued", "running")))):
            if (job.spec or {}).get("model") == name or json.dumps(job.spec).find(f'"{name}"') >= 0:
                return job.id
    return None


def deployment_dict(ctx: Platform, row: Deployment, base_url: str) -> dict:
    sup = ctx.deployments
    ready = sup.ready_count(row.id)
    requests = row.requests + sup.pending_requests(row.id)
    base_url = base_url.rstrip("/")
    return {
        "id": row.id,
        "name": row.name,
        "model": row.model,
        "base_model": row.base_model,
        "adapters": list(row.adapters),
        "model_ids": model_ids(row),
        "default_model_id": row.default_model_id,
        "engine": row.engine,
        "replicas": row.replicas,
        "replicas_ready": ready,
        "state": row.state,
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "last_error": row.last_error,
        "requests": requests,
        "rollout": row.rollout or None,  # an eval-gated promotion's stage, split and scores (rollouts.py)
        "workers": sup.workers(row.id) if sup is not None else [],
        "endpoints": {
            "openai": f"{base_url}/v1",
            "infer": f"{base_url}/v2/models/{row.name}/infer",
            "generate": f"{base_url}/v2/models/{row.name}/generate",
        },
    }


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
