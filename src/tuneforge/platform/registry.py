"""Registered models: a job's final output or one of its checkpoints, named and versioned, with lineage.

The weights stay in the job folder (a job with registered versions cannot be deleted); the row says
where they are and where they came from. ``name`` is the latest version, ``name@N`` a given one.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.errors import ConfigError, ConflictError, NotFoundError
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.command import WORK_DIR
from tuneforge.models.reward import is_reward_model
from tuneforge.names import check_name

from .context import Platform
from .db import Job, RegisteredModel


def check_model_folder(path: Path, base: str, where: str, cwd: Path | None = None) -> str:
    """What ``path`` is ("adapter" or "model") if it is a peft adapter on ``base`` or an HF model of the
    same architecture as ``base``; a ConfigError (→ 422) saying what was found otherwise. Reads config
    files only: the control plane never loads weights."""
    from tuneforge.models.info import read_info, weight_files
    from tuneforge.models.store import stored_model_dir

    base_dir = stored_model_dir(base)
    if base_dir is None:
        raise ConfigError(f"base {base!r}: no such model on the server (see GET /api/v1/models)")
    info = read_info(base_dir)
    if (path / "adapter_config.json").is_file():
        try:
            adapter = json.loads((path / "adapter_config.json").read_text())
        except ValueError as exc:
            raise ConfigError(f"{where}/adapter_config.json: not JSON ({exc})") from None
        if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
            raise ConfigError(f"{where}: adapter_config.json but no adapter_model.safetensors/.bin")
        said = str(adapter.get("base_model_name_or_path") or "")
        known = {
            base,
            str(base_dir),
            str(base_dir.resolve()),
            str(info.get("source") or ""),
            info.get("name"),
        }
        known |= {str(info.get(k)) for k in ("hub_id", "repo_id", "path") if info.get(k)}
        said_dir = Path(said) if Path(said).is_absolute() or cwd is None else cwd / said
        on_base = said in known or Path(said).name == base or _same_dir(said_dir, base_dir)
        if said and not on_base:
            raise ConfigError(
                f"{where}: a peft adapter trained on {said!r}, not on {base!r}; give --base the model "
                "it was trained on"
            )
        return "adapter"
    if (path / "config.json").is_file():
        if not weight_files(path):
            raise ConfigError(f"{where}: config.json but no weights (*.safetensors, *.bin)")
        try:
            config = json.loads((path / "config.json").read_text())
        except ValueError as exc:
            raise ConfigError(f"{where}/config.json: not JSON ({exc})") from None
        if info.get("model_type") and config.get("model_type") != info.get("model_type"):
            raise ConfigError(
                f"{where}: a {config.get('model_type')!r} model, but {base!r} is a {info.get('model_type')!r}"
            )
        return "model"
    raise ConfigError(
        f"{where}: neither an HF model (config.json + weights) nor a peft adapter (adapter_config.json)"
    )


def _same_dir(a: Path, b: Path) -> bool:
    """The script loaded its base through the job's mount: the link resolves to the stored model."""
    try:
        return a.exists() and a.resolve() == b.resolve()
    except OSError:
        return False


def register(
    ctx: Platform,
    job_id: str,
    checkpoint: str | None,
    name: str,
    path: str | None = None,
    base: str | None = None,
) -> RegisteredModel:
    check_name(name, "registered model", max_length=200)
    if path is not None or base is not None:
        return _register_path(ctx, job_id, path, base, name)
    with ctx.store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        if checkpoint is None:  # the best checkpoint train.select marked, when the job has one
            checkpoint = (fmt.read_best(Path(job.folder)) or {}).get("checkpoint")
        elif checkpoint == fmt.FINAL_DIR:
            checkpoint = None
        return register_in(s, job, checkpoint, name)


def register_in(s: Session, job: Job, checkpoint: str | None, name: str) -> RegisteredModel:
    """``register`` inside the caller's transaction: the supervisor registers an OpenAI fine-tune in the
    transaction that marks its job succeeded, so no reader sees one without the other."""
    check_name(name, "registered model", max_length=200)
    job_id = job.id
    if job.kind != "train":
        hint = " with --path and --base" if job.kind == "command" else ""
        raise ConflictError(f"job {job_id} is an {job.kind} job; register a folder of it{hint}")
    root = Path(job.folder)
    if checkpoint:
        path = fmt.safe_path(root / fmt.CHECKPOINTS_DIR, checkpoint)
        if path is None or not fmt.STEP_RE.match(checkpoint):
            names = [p.name for _, p in fmt.step_checkpoints(root)]
            raise NotFoundError(f"job {job_id} has no checkpoint {checkpoint!r}; it has {names}")
    else:
        if job.state != "succeeded":
            raise ConflictError(
                f"job {job_id} is {job.state}: register a checkpoint (--checkpoint step-N) or wait"
            )
        path = root / fmt.FINAL_DIR
        if not path.is_dir():
            raise NotFoundError(f"job {job_id} has no final output")
    version = (
        s.scalar(select(func.max(RegisteredModel.version)).where(RegisteredModel.name == name)) or 0
    ) + 1
    spec = job.spec or {}
    data = spec.get("data", {})
    row = RegisteredModel(
        id=f"rm-{secrets.token_hex(6)}",
        name=name,
        version=version,
        base_model=spec.get("model", ""),
        job_id=job.id,
        checkpoint=checkpoint or fmt.FINAL_DIR,
        path=str(path),
        lineage={
            "base_model": spec.get("model"),
            "job": job.id,
            "datasets": [d.get("path") for d in data.get("train", [])],
            "validation_dataset": (data.get("validation") or {}).get("path"),
            "method": spec.get("method"),
            "finetuning": spec.get("finetuning"),
            "spec": spec,
            "metrics": _checkpoint_metrics(root, checkpoint) if checkpoint else job.latest_metrics,
        },
        created_at=time.time(),
    )
    s.add(row)
    return row


def register_folder(
    ctx: Platform, name: str, base: str, path: Path, checkpoint: str, source: str
) -> RegisteredModel:
    """The next version of ``name`` for a standalone model folder the server wrote (a merged export of
    ``source``, a ``name@version``): the new version keeps its source's job and lineage."""
    check_name(name, "registered model", max_length=200)
    origin = resolve(ctx, source)
    with ctx.store.session() as s:
        version = (
            s.scalar(select(func.max(RegisteredModel.version)).where(RegisteredModel.name == name)) or 0
        ) + 1
        row = RegisteredModel(
            id=f"rm-{secrets.token_hex(6)}",
            name=name,
            version=version,
            base_model=base,
            job_id=origin.job_id,
            checkpoint=checkpoint[:100],
            path=str(path),
            lineage={**(origin.lineage or {}), "kind": "model", "merged_from": source},
            created_at=time.time(),
        )
        s.add(row)
    return row


def _checkpoint_metrics(root: Path, checkpoint: str) -> dict:
    # Reads the job's whole metrics.jsonl: only for a checkpoint, never for a final (the supervisor
    # registers finals inside the transaction that marks the job succeeded).
    return next((c for c in fmt.checkpoints_with_metrics(root) if c["name"] == checkpoint), {})


MAX_VERSION = 2**31 - 1  # the database's integer


def resolve(ctx: Platform, ref: str) -> RegisteredModel:
    name, _, version = ref.partition("@")
    with ctx.store.reading() as s:
        q = select(RegisteredModel).where(RegisteredModel.name == name)
        if version:
            # ASCII digits within the column's integer: "²".isdigit() holds but int() refuses it, and
            # ft@99999999999999999999 overflowed the query (a 500 from every route that resolves a ref)
            if not (version.isascii() and version.isdigit()) or int(version) > MAX_VERSION:
                raise NotFoundError(f"no registered model {ref!r}")
            q = q.where(RegisteredModel.version == int(version))
        row = s.scalars(q.order_by(RegisteredModel.version.desc())).first()
    if row is None:
        raise NotFoundError(f"no registered model {ref!r}")
    return row


def list_registered(ctx: Platform) -> list[RegisteredModel]:
    with ctx.store.reading() as s:
        return list(
            s.scalars(select(RegisteredModel).order_by(RegisteredModel.name, RegisteredModel.version))
        )


def delete_registered(ctx: Platform, ref: str) -> str:
    row = resolve(ctx, ref)
    with ctx.store.session() as s:
        s.delete(s.get(RegisteredModel, row.id))
    return f"{row.name}@{row.version}"


def registered_dict(row: RegisteredModel) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "ref": f"{row.name}@{row.version}",
        "base_model": row.base_model,
        "job": row.job_id,
        "checkpoint": row.checkpoint,
        "path": row.path,
        "kind": "reward" if is_reward_model(row.path) else "generative",  # reward: scores, cannot be served
        "lineage": row.lineage,
        "created_at": row.created_at,
    }


def job_is_registered(ctx: Platform, job_id: str) -> list[str]:
    with ctx.store.reading() as s:
        rows = s.scalars(select(RegisteredModel).where(RegisteredModel.job_id == job_id))
        return [f"{r.name}@{r.version}" for r in rows]


def _register_path(
    ctx: Platform, job_id: str, path: str | None, base: str | None, name: str
) -> RegisteredModel:
    """A folder a job wrote (a command job's output/checkpoint-N), checked to be a model or an adapter."""
    if not path or not base:
        raise ConfigError("register a folder with both path (e.g. output/checkpoint-3000) and base")
    with ctx.store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        if job.state in ("queued", "running") and job.kind != "train":
            raise ConflictError(f"job {job_id} is {job.state}: register its output once it has ended")
        root = Path(job.folder)
        target = fmt.safe_path(root, path)
        if target is None or not target.is_dir():
            raise NotFoundError(f"job {job_id} has no folder {path!r} (see GET /api/v1/jobs/{job_id}/files)")
        what = check_model_folder(target, base, f"{job_id}:{path}", cwd=root / WORK_DIR)
        if what == "adapter" and not (target / "tuneforge.json").exists():
            # The script recorded its base as it loaded it (often a path inside its job folder): say
            # which stored model it is, so evaluation and serving find the base like a spec job's.
            from tuneforge.models.store import models_root

            record = {
                "base_model": str(models_root() / base),
                "model": base,
                "job": str(root),
                "adapter": True,
            }
            (target / "tuneforge.json").write_text(json.dumps(record, indent=2))
        version = (
            s.scalar(select(func.max(RegisteredModel.version)).where(RegisteredModel.name == name)) or 0
        ) + 1
        spec = job.spec or {}
        row = RegisteredModel(
            id=f"rm-{secrets.token_hex(6)}",
            name=name,
            version=version,
            base_model=base,
            job_id=job.id,
            checkpoint=path,
            path=str(target),
            lineage={
                "base_model": base,
                "job": job.id,
                "kind": what,
                "datasets": [d.get("name") for d in spec.get("datasets", [])]
                if job.kind == "command"
                else [d.get("path") for d in spec.get("data", {}).get("train", [])],
                "command": spec.get("command"),
                "spec": spec,
                "metrics": job.latest_metrics,
            },
            created_at=time.time(),
        )
        s.add(row)
    return row
