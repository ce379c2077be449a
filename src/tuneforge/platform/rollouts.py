"""Eval-gated promotion of a model onto a live deployment: gate, canary, confirm, rollback.

``promote`` queues two evaluations on the named dataset, the candidate's and the live model's. The
deployment supervisor's tick calls ``advance``: when both have finished it decides the gate (gate.py: the
candidate passes the user's ``metric>=value`` and does no worse than the live model on that metric), starts
the candidate as its own deployment ``NAME-canary`` (its own replicas, logs and events) and, once that is
ready, the gateway sends it the canary's share of NAME's traffic (``route``). ``confirm`` (or the
``auto_after_s`` time) hands it all: the candidate takes the name NAME and the old deployment stays running
as ``NAME-previous``, so ``rollback`` is a rename back that the next request already sees. Tokens are
scoped by name, so they follow the name.

The stage and the split live in the deployment row's ``rollout`` column (a restarted control plane keeps
them); every step is an event on NAME with the metrics that decided it, and a code with its params
(platform/event_codes.py: the English, and the console's words in the user's language). The gate's
decision and a failure's reason are kept in the rollout too: as English (``decision``, ``reason``: the CLI
prints them) and as ``decision_code``/``decision_params`` and ``reason_code``/``reason_params``.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import update

from tuneforge.errors import ConfigError, ConflictError, NotFoundError, TuneforgeError

from . import deployments, evaluations, event_codes
from . import jobs as job_service
from .context import Platform
from .db import Deployment, DeploymentEvent, Job
from .gate import decide, parse_gate, significant

log = logging.getLogger(__name__)

ACTIVE = ("evaluating", "canary")  # a second promote waits until these end
_lock = threading.RLock()  # one transition at a time: the API's threads and the supervisor's tick
_credit_lock = threading.Lock()  # apart: the gateway must not wait while a transition stops workers
_credit: dict[str, float] = {}  # deployment id -> the canary's share owed so far (see take_canary)


def _side_name(name: str, suffix: str) -> str:
    return f"{name[: 63 - len(suffix) - 1]}-{suffix}"


def _rollout(row: Deployment | None) -> dict:
    return dict(row.rollout or {}) if row is not None else {}


def _save(ctx: Platform, dep_id: str, rollout: dict, event: str, *, code: str, **params) -> None:
    """The rollout, and the event of the step with its ``code`` and params (platform/event_codes.py)."""
    with ctx.store.session() as s:
        row = s.get(Deployment, dep_id)
        if row is None:
            return
        row.rollout = rollout
        deployments.add_event(s, dep_id, event, code=code, **params)


def _said(key: str, code: str, params: dict) -> dict:
    """A decision or reason as the rollout keeps it: the English (the CLI prints it), its code and params."""
    return {key: event_codes.message(code, params), f"{key}_code": code, f"{key}_params": params}


def _by_id(ctx: Platform, dep_id: str | None) -> Deployment | None:
    if not dep_id:
        return None
    with ctx.store.reading() as s:
        return s.get(Deployment, dep_id)


# -- the steps a user takes ------------------------------------------------------------------------------


def promote(
    ctx: Platform,
    name: str,
    model: str,
    dataset: str,
    share: float = 0.1,
    gate: str | None = None,
    auto_after_s: float | None = None,
    max_samples: int | None = 100,
    max_new_tokens: int = 32,
) -> Deployment:
    """Start a promotion: queue the evaluations the gate decides on. The rest happens in ``advance``."""
    if not 0 < share <= 1:
        raise ConfigError(f"canary share {share!r}: a fraction above 0 and at most 1 (10% is 0.1)")
    parsed = parse_gate(gate) if gate else None
    with _lock:
        row = deployments.get(ctx, name)
        ro = _rollout(row)
        if ro.get("stage") in ("candidate", "previous"):
            raise ConflictError(
                f"deployment {row.name} is a promotion's {ro['stage']}: promote onto the live deployment"
            )
        if ro.get("stage") in ACTIVE:
            raise ConflictError(
                f"deployment {row.name}: the promotion of {ro['model']} is at stage {ro['stage']}; "
                f"`tuneforge deployments promote {row.name} --confirm` or `rollback {row.name}` it first"
            )
        if row.state != "ready":
            raise ConflictError(f"deployment {row.name} is {row.state}: a canary needs it ready")
        deployments.resolve_model(ctx, model)  # servable at all, before spending an evaluation on it
        evaluations.target(ctx, model)
        evaluations.target(ctx, row.model)
        cand_job = evaluations.reuse_or_create(ctx, model, dataset, max_samples, max_new_tokens)
        live_job = evaluations.reuse_or_create(ctx, row.model, dataset, max_samples, max_new_tokens)
        new = {
            "stage": "evaluating",
            "model": model,
            "live_model": row.model,
            "dataset": dataset,
            "gate": str(parsed) if parsed else None,
            "share": share,
            "auto_after_s": auto_after_s,
            "evals": {"candidate": cand_job.id, "live": live_job.id},
            "previous": ro.get("previous"),  # the standby of an earlier promotion, kept until this confirms
            "started_at": time.time(),
        }
        code = "promote_evaluating" if parsed else "promote_evaluating_no_gate"
        _save(ctx, row.id, new, "promote", code=code, **new)
        return deployments.get(ctx, name)


def confirm(ctx: Platform, name: str, by: str = "user") -> Deployment:
    """The canary takes all traffic and the name; the old deployment stays up as NAME-previous."""
    with _lock:
        row = deployments.get(ctx, name)
        ro = _rollout(row)
        if ro.get("stage") != "canary":
            raise ConflictError(f"deployment {row.name} has no canary to confirm (stage: {ro.get('stage')})")
        cand = _by_id(ctx, ro.get("candidate"))
        if cand is None or cand.state != "ready":
            state = cand.state if cand else "gone"
            raise ConflictError(f"deployment {row.name}: the candidate is {state}; confirm once it is ready")
        stale = _by_id(ctx, ro.get("previous"))
        if stale is not None:  # two promotions back: no rollback reaches it any more
            deployments.remove(ctx, stale.id)
        previous_name = _side_name(row.name, "previous")
        with ctx.store.session() as s:
            old, new = s.get(Deployment, row.id), s.get(Deployment, cand.id)
            old.name = f"{row.id}-swap"  # names are unique: free NAME before the candidate takes it
            s.flush()
            new.name, old.name = row.name, previous_name
            _move_events(s, old.id, new.id)  # NAME's history stays on NAME
            new.rollout = {**ro, "stage": "promoted", "candidate": None, "previous": old.id, "by": by}
            old.rollout = {"stage": "previous", "of": new.id}
            deployments.add_event(
                s, new.id, "promoted", code="promoted_auto" if by == "auto" else "promoted_by_user",
                model=ro["model"], by=by, live_model=row.model, previous=previous_name,
            )  # fmt: skip
        with _credit_lock:
            _credit.pop(row.id, None)
        return deployments.get(ctx, name)


def rollback(ctx: Platform, name: str) -> Deployment:
    """Back to the model that served before: a canary ends, a confirmed promotion gives the name back."""
    with _lock:
        row = deployments.get(ctx, name)
        ro = _rollout(row)
        stage = ro.get("stage")
        if stage in ACTIVE:
            _end_canary(ctx, row, ro)
            code = "withdrawn_evaluating" if stage == "evaluating" else "withdrawn_canary"
            rolled = {**ro, "stage": "rolled_back", "candidate": None}
            _save(ctx, row.id, rolled, "rolled_back", code=code, model=ro["model"], live_model=row.model)
            return deployments.get(ctx, name)
        previous = _by_id(ctx, ro.get("previous"))  # also after a later promotion was refused or failed
        if previous is None:
            raise ConflictError(f"deployment {row.name}: nothing to roll back to (stage: {stage})")
        with ctx.store.session() as s:
            new, old = s.get(Deployment, row.id), s.get(Deployment, previous.id)
            new.name = _side_name(row.name, "withdrawn")
            s.flush()
            old.name = row.name
            _move_events(s, new.id, old.id)
            old.rollout = {**ro, "stage": "rolled_back", "previous": None}
            new.rollout = {"stage": "withdrawn"}
            deployments.add_event(s, old.id, "rolled_back", code="rolled_back", model=previous.model,
                                  withdrawn=row.model)  # fmt: skip
        deployments.remove(ctx, row.id)
        if previous.state in ("stopped", "failed"):
            deployments.start(ctx, name)
        return deployments.get(ctx, name)


def remove(ctx: Platform, name: str) -> None:
    """Delete a deployment. A promotion under way ends first: its evaluations are cancelled (else they run
    to the end for nobody) and its canary removed; under the transition lock, so the tick cannot start a
    canary for a deployment being deleted (it would serve on, owned by no deployment)."""
    with _lock:
        row = deployments.get(ctx, name)
        ro = _rollout(row)
        if ro.get("stage") in ACTIVE:
            _end_canary(ctx, row, ro)
        deployments.remove(ctx, row.id)


def _move_events(s, from_id: str, to_id: str) -> None:
    s.execute(
        update(DeploymentEvent).where(DeploymentEvent.deployment_id == from_id).values(deployment_id=to_id)
    )


def _end_canary(ctx: Platform, row: Deployment, ro: dict) -> None:
    for job_id in (ro.get("evals") or {}).values():
        try:
            job_service.cancel_job(ctx, job_id)
        except NotFoundError:
            pass
    cand = _by_id(ctx, ro.get("candidate"))
    if cand is not None:
        deployments.remove(ctx, cand.id)
    with _credit_lock:
        _credit.pop(row.id, None)


# -- what the supervisor's tick and the gateway call -----------------------------------------------------


def advance(ctx: Platform, deps: list[Deployment]) -> None:
    """Move every active promotion one step: decide a gate whose evaluations have finished, confirm a
    canary whose ``auto_after_s`` has passed. A step that fails ends the promotion with its reason."""
    for row in deps:
        ro = _rollout(row)
        if ro.get("stage") not in ACTIVE:
            continue
        try:
            with _lock:
                _advance_one(ctx, row.id)
        except TuneforgeError as exc:
            _fail(ctx, row.id, code="promote_failed", reason=str(exc))


def _advance_one(ctx: Platform, dep_id: str) -> None:
    row = _by_id(ctx, dep_id)
    ro = _rollout(row)
    if ro.get("stage") == "evaluating":
        _decide_gate(ctx, row, ro)
    elif ro.get("stage") == "canary":
        cand = _by_id(ctx, ro.get("candidate"))
        if cand is None:
            _fail(ctx, row.id, code="candidate_removed")
        elif cand.state == "failed":
            _fail(ctx, row.id, code="candidate_failed", reason=cand.last_error)
        elif cand.state == "stopped":
            _fail(ctx, row.id, code="candidate_stopped")
        elif ro.get("auto_at") and time.time() >= ro["auto_at"] and cand.state == "ready":
            confirm(ctx, row.name, by="auto")


def _decide_gate(ctx: Platform, row: Deployment, ro: dict) -> None:
    with ctx.store.reading() as s:
        jobs = {side: s.get(Job, job_id) for side, job_id in ro["evals"].items()}
    for side, job in jobs.items():
        if job is None or job.state in ("failed", "cancelled"):
            # the job's own English error, else its state (cancelled) or "removed"
            why = ((job.error or {}).get("message") if job else None) or (job.state if job else "removed")
            code = "eval_failed_candidate" if side == "candidate" else "eval_failed_live"
            _fail(ctx, row.id, code=code, job=ro["evals"][side], reason=why)
            return
    if any(job.state != "succeeded" for job in jobs.values()):
        return
    scores = {side: next(iter((evaluations.scores(job) or {"?": {}}).values())) for side, job in jobs.items()}
    gate = parse_gate(ro["gate"]) if ro.get("gate") else None
    d = decide(gate, scores["candidate"], scores["live"])
    decided = {**ro, "scores": scores, **_said("decision", d.code, d.params)}
    if not d.passed:
        _save(ctx, row.id, {**decided, "stage": "refused"}, "refused", code=d.code, **d.params, scores=scores)
        return
    cand = deployments.create(
        ctx,
        ro["model"],
        name=_side_name(row.name, "canary"),
        engine=row.engine,
        replicas=1,
        options=row.options,
    )
    with ctx.store.session() as s:
        s.get(Deployment, cand.id).rollout = {"stage": "candidate", "of": row.id}
    auto = ro.get("auto_after_s")
    auto_at = time.time() + auto if auto else None
    canary = {**decided, "stage": "canary", "candidate": cand.id, "auto_at": auto_at}
    _save(ctx, row.id, canary, "gate_passed", code=d.code, **d.params, scores=scores)
    said = {"model": ro["model"], "name": cand.name, "percent": significant(ro["share"] * 100)}
    _save(ctx, row.id, canary, "canary", code="canary_started", **said)


def _fail(ctx: Platform, dep_id: str, *, code: str, **params) -> None:
    """End the promotion: the reason is ``code`` with its params (platform/event_codes.py)."""
    row = _by_id(ctx, dep_id)
    if row is None:
        return
    ro = _rollout(row)
    failed = {**ro, "stage": "failed", "candidate": None, **_said("reason", code, params)}
    log.warning("deployment %s: promotion of %s failed: %s", row.name, ro.get("model"), failed["reason"])
    try:
        _end_canary(ctx, row, ro)
    finally:
        _save(ctx, dep_id, failed, "promote_failed", code=code, **params)


def route(ctx: Platform, deps: list[Deployment], dep: Deployment, model_id: str) -> tuple[Deployment, str]:
    """Where a request for ``dep``'s default model goes: the canary's share of them to the candidate, the
    rest (and every other model id, and all while the candidate has no ready replica) to ``dep``."""
    ro = _rollout(dep)
    if ro.get("stage") != "canary" or model_id != dep.default_model_id:
        return dep, model_id
    cand = next((d for d in deps if d.id == ro.get("candidate")), None)
    if cand is None or cand.state != "ready" or not ctx.deployments.ready_count(cand.id):
        return dep, model_id
    if not take_canary(dep.id, float(ro.get("share") or 0)):
        return dep, model_id
    return cand, cand.default_model_id


def take_canary(dep_id: str, share: float) -> bool:
    """Whether this request goes to the canary: a running credit, so over any n requests the canary gets
    share·n of them to within one (a random draw would wander by several percent over a few hundred)."""
    with _credit_lock:
        credit = _credit.get(dep_id, 0.0) + share
        hit = credit >= 1.0 - 1e-9
        _credit[dep_id] = credit - 1.0 if hit else credit
        return hit
