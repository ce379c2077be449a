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
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import and_, or_, select

from tuneforge.errors import ConfigError, ConflictError, NotFoundError, TuneforgeError
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.executor import Handle, Launch, worker_argv
from tuneforge.jobs.reconcile import Outcome, known_exit_code, outcome, reconcile_running
from tuneforge.jobs.tbmetrics import TensorBoardTail
from tuneforge.spec import (
    JobSpec,
    OverrideError,
    UnknownTemplate,
    apply_overrides,
    dump_spec,
    expand_template,
)
from tuneforge.train.tracking import missing_trackers

from . import catalog, commands
from .context import Platform
from .db import Job
from .schemas import CommandJobCreate, SpecProblems
from .ticker import Ticker

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
            [{"loc": ["spec", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
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
        ref.path = row.id  # by id: a later upload with the same name does not change this job
    from tuneforge.models.store import stored_model_dir

    if stored_model_dir(spec.model) is None:
        problems.append(
            {"loc": ["spec", "model"], "msg": f"no model {spec.model!r} on the server: pull or import it"}
        )
    # A tracker's package missing on this server fails now, not after the job waited in the queue.
    problems += [
        {"loc": ["spec", "train", "report_to"], "msg": m} for m in missing_trackers(spec.train.report_to)
    ]
    gpus = spec.resources.gpus * spec.resources.nodes
    if spec.resources.nodes > 1:
        problems.append({"loc": ["spec", "resources", "nodes"], "msg": "the local executor runs on one node"})
    elif gpus > ctx.executor.gpu_count:
        problems.append(
            {
                "loc": ["spec", "resources", "gpus"],
                "msg": f"asks for {gpus} GPU(s); this machine has {ctx.executor.gpu_count}",
            }
        )
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


def get_job(ctx: Platform, job_id: str) -> Job:
    with ctx.store.reading() as s:
        row = s.get(Job, job_id)
    if row is None:
        raise NotFoundError(f"no job {job_id!r}")
    return row


def cursor(row: Job) -> str:
    return f"{row.created_at!r}_{row.id}"


def list_jobs(ctx: Platform, state: str | None, limit: int, before: str | None, kind: str | None = None):
    """Newest first; ``before`` is the cursor of the last job of the previous page."""
    with ctx.store.reading() as s:
        q = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if state:
            q = q.where(Job.state == state)
        if kind:
            q = q.where(Job.kind == kind)
        if before:
            stamp, _, last_id = before.partition("_")
            try:
                at = float(stamp)
            except ValueError:
                raise ConfigError(f"before={before!r}: not a cursor from a previous page") from None
            q = q.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last_id)))
        return list(s.scalars(q))


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


def job_dict(row: Job) -> dict:
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "state": row.state,
        "priority": row.priority,
        "gpus": row.gpus,
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
    }


# -- launching ------------------------------------------------------------------------------------------


def launch_for(ctx: Platform, row: Job) -> Launch:
    root = Path(row.folder)
    env = {"TUNEFORGE_HOME": str(ctx.home), "PYTHONUNBUFFERED": "1"}
    if row.kind == "train":
        spec_file = root / fmt.SPEC_FILE
        if not spec_file.is_file():  # queued by a server from before the spec was written at creation
            write_resolved_spec(root, JobSpec.model_validate(row.spec))
        argv = worker_argv("train", str(spec_file), "--resolved")
        if row.resume_from:
            argv += ["--set", f"resume_from={row.resume_from}"]
    elif row.kind == "eval":
        e = row.spec
        argv = worker_argv("eval", e["model"], "--data", e["dataset"], "-o", str(root / "eval"), "--json")
        if e.get("adapter"):
            argv += ["--adapter", e["adapter"]]
        if e.get("compare_base"):
            argv.append("--compare-base")
        if e.get("max_samples"):
            argv += ["--max-samples", str(e["max_samples"])]
        argv += ["--max-new-tokens", str(e.get("max_new_tokens", 64))]
    elif row.kind == "command":
        argv, env, cwd = commands.launch_parts(ctx, row)
        return Launch(row.id, argv, root, env, cwd, row.gpus, row.attempt + 1, inherit_env=False)
    else:
        raise ConfigError(f"job {row.id}: unknown kind {row.kind!r}")
    return Launch(row.id, argv, root, env, root, row.gpus, row.attempt + 1)


class Supervisor(Ticker):
    """One thread: follows running jobs to their end, applies restart policies, starts queued jobs."""

    thread_name = "tuneforge-supervisor"

    def __init__(self, ctx: Platform, interval: float = 0.5):
        super().__init__(interval)
        self.ctx = ctx
        # callables(ctx, session, row) run in the transaction that marks a job succeeded (the OpenAI
        # registration): a reader sees the job succeeded with their work done, or not succeeded; one that
        # raises a TuneforgeError makes the job failed with its message instead.
        self.before_success: list = []
        self._tails: dict[str, tuple[TensorBoardTail, float]] = {}  # command jobs' TensorBoard readers
        # Running jobs' metrics and events, each read from where the last tick stopped.
        self._progress: dict[str, fmt.ProgressTail] = {}
        self._timed_out: set[str] = set()

    # -- start of the control plane
    def reconcile(self) -> None:
        catalog.fail_interrupted_validations(self.ctx.store, self.ctx.settings)
        with self.ctx.store.reading() as s:
            running = list(s.scalars(select(Job).where(Job.state == "running")))
        for row in running:
            handle = Handle(row.pid, row.pid_ticks) if row.pid else None
            result = reconcile_running(
                self.ctx.executor, row.id, Path(row.folder), handle, row.gpus, row.attempt
            )
            fmt.append_event(Path(row.folder), fmt.RECONCILED, reason=result.reason, adopted=result.adopted)
            log.info("job %s: %s", row.id, result.reason)
            if not result.adopted:
                self._finish(row.id, result.outcome, result.exit_code)

    # -- every tick
    def tick(self) -> None:
        with self.ctx.store.reading() as s:
            running = list(s.scalars(select(Job).where(Job.state == "running")))
        for row in running:
            try:
                self._supervise(row)
            except Exception:  # one job's folder (a script can write it) must not stop the others
                log.exception("job %s: supervising it failed; trying again next tick", row.id)
        for job_id in self._progress.keys() - {row.id for row in running}:
            del self._progress[job_id]  # ended: a restarted attempt starts a fresh tail
        self._schedule()

    def _supervise(self, row: Job) -> None:
        status = self.ctx.executor.poll(row.id)
        if status is not None and status.running:
            if row.kind == "command":
                self._follow_command(row)
            self._copy_progress(row)
            return
        # Not our child (re-attached after a restart): a command job's runner recorded the code.
        code = known_exit_code(Path(row.folder), row.attempt, status.exit_code if status else None)
        if row.kind == "command":
            self._read_tensorboard(row, final=True)
        self._copy_progress(row, final=True)
        self._finish(row.id, outcome(Path(row.folder), code, row.cancel_requested), code)

    # -- a user's own command: metrics from its TensorBoard files, its time limit
    TB_POLL_S = 2.0

    def _read_tensorboard(self, row: Job, final: bool = False) -> None:
        tail, last = self._tails.get(row.id) or (None, 0.0)
        if not final and time.monotonic() - last < self.TB_POLL_S:
            return
        tail = tail or TensorBoardTail(Path(row.folder))
        try:
            tail.poll()
        except Exception:
            log.exception("job %s: reading its TensorBoard files failed", row.id)
        if final:
            self._tails.pop(row.id, None)
            tail.close()
        else:
            self._tails[row.id] = (tail, time.monotonic())

    def _follow_command(self, row: Job) -> None:
        self._read_tensorboard(row)
        limit = (row.spec or {}).get("time_limit_s")
        if (
            limit
            and row.started_at
            and time.time() - row.started_at > limit
            and row.id not in self._timed_out
        ):
            self._timed_out.add(row.id)
            fmt.append_event(Path(row.folder), fmt.TIME_LIMIT, seconds=limit)
            log.info("job %s: time limit of %ss reached; stopping it", row.id, limit)
            self.ctx.executor.cancel(row.id, grace_s=self.ctx.cancel_grace_s)

    # While a job runs a tick reads at most this much of each of its files, so a huge one (a script can
    # write it) is caught up over several ticks rather than holding up the others; its last read is whole.
    PROGRESS_READ_BYTES = 16 << 20

    def _copy_progress(self, row: Job, final: bool = False) -> None:
        tail = self._progress.get(row.id)
        if tail is None or tail.root != Path(row.folder):
            tail = self._progress[row.id] = fmt.ProgressTail(Path(row.folder))
        p = tail.poll(None if final else self.PROGRESS_READ_BYTES)
        max_steps = p["max_steps"] or row.max_steps
        if (p["step"], p["latest_metrics"], max_steps) == (row.step, row.latest_metrics, row.max_steps):
            return
        with self.ctx.store.session() as s:
            r = s.get(Job, row.id)
            if r is not None:
                r.step, r.latest_metrics = p["step"], p["latest_metrics"]
                r.max_steps = p["max_steps"] or r.max_steps

    def _finish(self, job_id: str, result, exit_code: int | None) -> None:
        with self.ctx.store.session() as s:
            row = s.get(Job, job_id, with_for_update=True)
            if row is None or row.state != "running":
                return
            row.exit_code = exit_code
            retries_used = row.attempt - 1
            timed_out = job_id in self._timed_out
            if timed_out:  # a hard cap on the job: no restart after it
                self._timed_out.discard(job_id)
                limit = (row.spec or {}).get("time_limit_s")
                result = Outcome(
                    "failed",
                    {
                        "message": f"the time limit of {limit:g} s was reached; the job was stopped",
                        "exit_code": exit_code,
                        "log_tail": fmt.tail_lines(Path(row.folder) / fmt.WORKER_LOG),
                    },
                )
            if row.kind == "command":
                root = Path(row.folder)
                fmt.append_event(
                    root, fmt.EXITED, exit_code=exit_code, attempt=row.attempt, outcome=result.state
                )
                if result.state == "cancelled":
                    fmt.append_event(root, fmt.CANCELLED, attempt=row.attempt)
            if (
                result.state == "failed"
                and row.restart_policy == "on-failure"
                and retries_used < row.max_retries
                and not row.cancel_requested
                and not timed_out
            ):
                row.state, row.error = "queued", result.error
                row.resume_from = None if row.kind == "command" else "latest"  # a script resumes itself
                row.pid = row.pid_ticks = None
                fmt.append_event(
                    Path(row.folder),
                    fmt.RESTARTING,
                    attempt=row.attempt + 1,
                    max_retries=row.max_retries,
                    reason=(result.error or {}).get("message"),
                )
                log.info("job %s: failed; restarting (attempt %d)", job_id, row.attempt + 1)
                finished = None
            else:
                row.state, row.error, row.finished_at = result.state, result.error, time.time()
                row.pid = row.pid_ticks = None
                if row.state == "succeeded":
                    self._before_success(s, row)
                finished = row
        if finished is not None:
            log.info("job %s: %s", job_id, finished.state)

    def _before_success(self, s, row: Job) -> None:
        for hook in self.before_success:
            try:
                with s.begin_nested():  # a failed hook leaves none of its rows behind
                    hook(self.ctx, s, row)
            except Exception as exc:
                if not isinstance(exc, TuneforgeError):
                    log.exception("job %s: a before-success hook failed", row.id)
                row.state = "failed"
                row.error = {
                    "message": f"the training succeeded but finishing the job failed: {exc}",
                    "exit_code": row.exit_code,
                    "log_tail": "",
                }
                return

    def _schedule(self) -> None:
        with self.ctx.store.reading() as s:
            queued = list(
                s.scalars(
                    select(Job)
                    .where(Job.state == "queued")
                    .order_by(Job.priority.desc(), Job.created_at.asc())
                    .limit(50)
                )
            )
        for row in queued:
            # Strict order: the head waits for its GPUs rather than be overtaken forever by small jobs.
            if not self.ctx.executor.can_start(row.gpus):
                return
            self._start(row.id)

    def _start(self, job_id: str) -> None:
        with self.ctx.store.session() as s:
            row = s.get(Job, job_id, with_for_update=True)
            if row is None or row.state != "queued":
                return
            launch = launch_for(self.ctx, row)
            # What the user asked to run, not the runner (command) or the worker's Python (spec) around it.
            argv = list(row.spec["command"]) if row.kind == "command" else launch.argv[3:]
            fmt.append_event(Path(row.folder), fmt.LAUNCHED, attempt=launch.attempt, argv=argv)
            try:
                handle = self.ctx.executor.submit(launch)
            except OSError as exc:
                row.state, row.finished_at = "failed", time.time()
                row.error = {
                    "message": f"could not start the worker: {exc}",
                    "exit_code": None,
                    "log_tail": "",
                }
                return
            row.state, row.attempt = "running", launch.attempt
            row.pid, row.pid_ticks = handle.pid, handle.start_ticks
            if row.kind == "command":
                fmt.append_event(Path(row.folder), fmt.STARTED, attempt=launch.attempt, pid=handle.pid)
            row.started_at = row.started_at or time.time()
