"""Jobs in the control plane: create (validated before queueing), cancel, resume, retry, delete, and the
supervisor thread that starts queued jobs on the executor and follows running ones to their end.

The job folder is the worker's report; the row is the control plane's view of it (state, attempt, pid
to re-attach to, progress copied from the folder for cheap listing).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from collections import namedtuple
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import bindparam, select

from tuneforge.errors import ConflictError, NotFoundError
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.ranks import gpu_shortfall
from tuneforge.spec import (
    JobSpec,
    OverrideError,
    UnknownTemplate,
    apply_overrides,
    dump_spec,
    expand_template,
)
from tuneforge.train.data import kind_problem
from tuneforge.train.tracking import missing_trackers

from . import catalog, commands, queues
from .context import Platform
from .db import Job
from .error_codes import json_params
from .reward_models import resolve_reward_models
from .schemas import CommandJobCreate, SpecProblems

log = logging.getLogger(__name__)
TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")


def new_job_id() -> str:
    return f"job-{secrets.token_hex(6)}"


# -- building and checking a spec ----------------------------------------------------------------------


def build_spec(
    spec: dict | None,
    template: str | None,
    model: str | None,
    datasets: list[str] | None,
    validation: str | None,
    overrides: dict | None,
    resources: dict | None,
) -> dict:
    """The JobSpec dict a request describes: a whole spec, or template + model + datasets + overrides."""
    if spec is not None:
        data = dict(spec)
    else:
        if not template or not model or not datasets:
            missing = [
                n for n, v in (("template", template), ("model", model), ("datasets", datasets)) if not v
            ]
            raise SpecProblems(
                [{"loc": ["body", m], "msg": "required without a whole spec"} for m in missing]
            )
        data = {"template": template, "model": model, "data": {"train": list(datasets)}}
        if validation:
            data["data"]["validation"] = validation
    try:
        apply_overrides(data, overrides or {})
    except OverrideError as exc:
        raise SpecProblems([{"loc": ["body", "overrides", exc.key], "msg": exc.problem}]) from None
    if resources and isinstance(data.get("resources", {}), dict):  # not a dict: validation says so
        data["resources"] = {**data.get("resources", {}), **resources}
    try:
        expand_template(data)
    except UnknownTemplate as exc:
        raise SpecProblems([{"loc": ["body", "template"], "msg": str(exc)}]) from None
    return data


def validate_spec(ctx: Platform, data: dict) -> JobSpec:
    """JobSpec + what only the server knows: stored datasets and models, GPUs on this machine."""
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecProblems(
            [
                {
                    "loc": ["spec", *e["loc"]],
                    "msg": e["msg"],
                    "type": e["type"],
                    "params": json_params(e.get("ctx")),
                }
                for e in exc.errors()
            ]
        ) from None
    problems = []
    if spec.output_dir:
        problems.append({"loc": ["spec", "output_dir"], "msg": "set by the server; leave it out"})
    if spec.resume_from:
        problems.append({"loc": ["spec", "resume_from"], "msg": "use POST /jobs/{id}/resume"})
    refs = [("train", i, r) for i, r in enumerate(spec.data.train)]
    if spec.data.validation:
        refs.append(("validation", None, spec.data.validation))
    for part, i, ref in refs:
        loc = ["spec", "data", part, *([i] if i is not None else []), "path"]
        try:
            row = catalog.get_dataset_row(ctx.store, ref.path)
        except NotFoundError:
            problems.append({"loc": loc, "msg": f"no stored dataset {ref.path!r}: upload it first"})
            continue
        if row.state != "ready":
            problems.append({"loc": loc, "msg": f"dataset {row.id} is {row.state}"})
            continue
        if row.kind and (why := kind_problem(spec.method, row.id, row.kind, row.format)):
            problems.append({"loc": loc, "msg": why})  # refused now, not after a wait in the queue
            continue
        ref.path = row.id  # by id: a later upload with the same name does not change this job
    from tuneforge.models.store import stored_model_dir

    if stored_model_dir(spec.model) is None:
        problems.append(
            {"loc": ["spec", "model"], "msg": f"no model {spec.model!r} on the server: pull or import it"}
        )
    problems += resolve_reward_models(ctx, spec)  # GRPO's reward_model rewards, by folder
    # A tracker's package missing on this server fails now, not after the job waited in the queue.
    problems += [
        {"loc": ["spec", "train", "report_to"], "msg": m} for m in missing_trackers(spec.train.report_to)
    ]
    gpus = spec.resources.gpus * spec.resources.nodes
    if spec.resources.nodes > 1:
        problems.append({"loc": ["spec", "resources", "nodes"], "msg": "the local executor runs on one node"})
    elif why := gpu_shortfall(gpus, ctx.executor.gpu_count):
        problems.append({"loc": ["spec", "resources", "gpus"], "msg": why})
    r = spec.resources
    if why := queues.queue_problem(ctx.settings, r.queue, r.processes, r.gpus):
        problems.append({"loc": ["spec", "resources", "queue"], "msg": why})
    if not problems and spec.data.eval_overlap.strict:  # refused now, not after a wait in the queue
        from tuneforge.train.leakage import strict_refusal

        if (why := strict_refusal(spec)) is not None:
            problems.append({"loc": ["spec", "data", "eval_overlap"], "msg": why})
    if problems:
        raise SpecProblems(problems)
    return spec


def create_job(
    ctx: Platform,
    spec: JobSpec,
    *,
    kind: str = "train",
    priority: int = 0,
    restart_policy: str = "never",
    max_retries: int = 0,
    extra: dict | None = None,
    name: str | None = None,
    gpus: int = 0,
    job_id: str | None = None,
    prepared: Path | None = None,
) -> Job:
    """Queue a job; ``prepared`` is a folder already filled (a command job's code) to become its own.

    A training spec is resolved here, once: validated, defaults filled, datasets by id, the job folder as
    its output_dir. The row keeps it and the worker runs the file written into the folder as it is."""
    job_id = job_id or new_job_id()
    root = ctx.jobs_dir / job_id
    if prepared is not None:
        prepared.rename(root)
    else:
        root.mkdir(parents=True, exist_ok=False)
    if isinstance(spec, JobSpec):
        spec = write_resolved_spec(root, spec)
    row = Job(
        id=job_id,
        kind=kind,
        name=spec.name if isinstance(spec, JobSpec) else name,
        state="queued",
        spec=spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec,
        priority=priority,
        gpus=spec.resources.gpus if isinstance(spec, JobSpec) else gpus,
        restart_policy=restart_policy,
        max_retries=max_retries,
        attempt=0,
        folder=str(root),
        cancel_requested=False,
        step=0,
        max_steps=spec.train.max_steps if isinstance(spec, JobSpec) else None,
        latest_metrics={},
        created_at=time.time(),
        extra=extra or {},
    )
    with ctx.store.session() as s:
        s.add(row)
    fmt.append_event(root, fmt.QUEUED, job=job_id, priority=priority)
    ctx.wake()
    return row


def write_resolved_spec(root: Path, spec: JobSpec) -> JobSpec:
    """The spec with this job folder as its output, written there as the worker's spec.yaml."""
    resolved = spec.model_copy(update={"output_dir": str(root)})
    (root / fmt.SPEC_FILE).write_text(dump_spec(resolved), encoding="utf-8")
    return resolved


def submit_command(ctx: Platform, body: CommandJobCreate) -> Job:
    """A user's own command (checked and its folder filled by ``commands.prepare``), queued."""
    job_id = new_job_id()
    request, folder = commands.prepare(ctx, body, job_id)
    return create_job(
        ctx,
        request,
        kind="command",
        name=body.name,
        gpus=body.gpus,
        priority=body.priority,
        restart_policy=body.restart_policy,
        max_retries=body.max_retries,
        extra={"labels": body.labels},
        job_id=job_id,
        prepared=folder,
    )


# A job as the routes read it (the list and get answers are job_answers'): a Core row from a prepared
# statement, as a named tuple with the columns as attributes (read like a Job). Not ORM
# instances, whose identity map and instance state were a fifth of a 50-job page's server CPU, and not
# SQLAlchemy's Row, whose attribute access costs ten times a named tuple's (25 per job in job_dict).
_JOBS = Job.__table__
_JOB_BY_ID = select(_JOBS).where(_JOBS.c.id == bindparam("job_id"))
JobRow = namedtuple("JobRow", [c.key for c in _JOBS.c])


def get_job(ctx: Platform, job_id: str) -> JobRow:
    """The job's row, read-only; to change a job, read it in a ``store.session()``."""
    with ctx.store.rows() as c:
        row = c.execute(_JOB_BY_ID, {"job_id": job_id}).first()
    if row is None:
        raise NotFoundError(f"no job {job_id!r}")
    return JobRow._make(row)


def cancel_job(ctx: Platform, job_id: str) -> Job:
    with ctx.store.session() as s:
        row = s.get(Job, job_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        if row.state in TERMINAL:
            return row
        row.cancel_requested = True
        if row.state == "queued":
            row.state, row.finished_at = "cancelled", time.time()
        running = row.state == "running"
    fmt.append_event(Path(row.folder), fmt.CANCEL_REQUESTED)
    if running:
        ctx.executor.cancel(job_id, grace_s=ctx.cancel_grace_s)
    return row


def resume_job(ctx: Platform, job_id: str, checkpoint: str | None) -> Job:
    which = checkpoint or "latest"
    with ctx.store.session() as s:
        row = s.get(Job, job_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        if row.kind != "train":
            raise ConflictError("only training jobs resume from a checkpoint; retry this one")
        if row.state not in ("failed", "cancelled"):
            raise ConflictError(f"job {job_id} is {row.state}; only failed or cancelled jobs resume")
        names = [p.name for _, p in fmt.step_checkpoints(Path(row.folder))]
        if which != "latest" and which not in names:
            raise NotFoundError(f"job {job_id} has no checkpoint {which!r}; it has {names}")
        row.state, row.resume_from, row.cancel_requested = "queued", which, False
        row.error, row.exit_code, row.finished_at = None, None, None
    fmt.append_event(Path(row.folder), fmt.QUEUED, resume_from=which)
    ctx.wake()
    return row


def retry_job(ctx: Platform, job_id: str) -> Job:
    """A finished job run again from the start, as a new job with the same request."""
    old = get_job(ctx, job_id)
    if old.state not in TERMINAL:
        raise ConflictError(f"job {job_id} is {old.state}; retry a finished job")
    if old.kind == "command":  # a fresh folder: the code unpacked again, the mounts linked again
        row = submit_command(ctx, CommandJobCreate.model_validate(old.spec))
        with ctx.store.session() as s:
            s.get(Job, row.id).extra = {**(row.extra or {}), "retry_of": old.id}
        return get_job(ctx, row.id)
    spec = JobSpec.model_validate(old.spec) if old.kind == "train" else old.spec
    extra = {k: v for k, v in (old.extra or {}).items() if k != "openai"}
    return create_job(
        ctx,
        spec,
        kind=old.kind,
        priority=old.priority,
        restart_policy=old.restart_policy,
        max_retries=old.max_retries,
        extra={**extra, "retry_of": old.id},
    )


def delete_job(ctx: Platform, job_id: str) -> None:
    with ctx.store.session() as s:
        row = s.get(Job, job_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        if row.state not in TERMINAL:
            raise ConflictError(f"job {job_id} is {row.state}; cancel it before deleting")
        s.delete(row)
    shutil.rmtree(row.folder, ignore_errors=True)


def selects_best(row: Job | JobRow) -> bool:
    return row.kind == "train" and bool(((row.spec or {}).get("train") or {}).get("select"))


_READ_BEST = object()


def job_dict(row: Job | JobRow, best=_READ_BEST) -> dict:
    """The answer's fields. ``job_answers`` keeps each encoded answer while the row is the same: anything
    read here besides the row (now only best.json, passed in as ``best`` when already read) must be part
    of the version it compares there, or lists would answer it stale."""
    if best is _READ_BEST:
        # only train.select writes the file: a job without it is not worth an open() per listed row
        best = fmt.read_best(Path(row.folder)) if selects_best(row) else None
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "state": row.state,
        "priority": row.priority,
        "gpus": row.gpus,
        "workers": queues.job_workers(row),
        "queue": queues.job_queue(row),
        "restart_policy": row.restart_policy,
        "max_retries": row.max_retries,
        "attempt": row.attempt,
        "resume_from": row.resume_from,
        "progress": {"step": row.step, "max_steps": row.max_steps},
        "latest_metrics": row.latest_metrics or {},
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "exit_code": row.exit_code,
        "error": row.error,
        "spec": row.spec,
        "labels": (row.extra or {}).get("labels", {}),
        "best_checkpoint": best,
    }


# -- launching ------------------------------------------------------------------------------------------
