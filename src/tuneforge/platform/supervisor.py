"""The job supervisor: one thread that starts queued jobs on the executor (``launch_for`` turns a row into
its worker's launch), follows running ones through their job folders to their end, and applies restart
policies. The services it follows are in ``jobs.py``; this module is the part that runs on its own.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import select

from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.executor import Handle, Launch, worker_argv
from tuneforge.jobs.reconcile import Outcome, known_exit_code, outcome, reconcile_running
from tuneforge.jobs.tbmetrics import TensorBoardTail
from tuneforge.spec import JobSpec

from . import catalog, commands, queues
from .context import Platform
from .db import Job
from .jobs import write_resolved_spec
from .ticker import Ticker

log = logging.getLogger(__name__)
SCHEDULE_PAGE = 50  # queued jobs the schedule reads at a time
SCHEDULE_PAGES = 40  # with queues: how far past held queues it reads in one tick (2,000 jobs)


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
    res = (row.spec or {}).get("resources") or {} if row.kind == "train" else {}
    memory_mb = int(res["memory_gb"] * 1024) if res.get("memory_gb") else None
    processes = max(res.get("gpus", 0), res.get("workers", 1)) * res.get("nodes", 1)
    return Launch(row.id, argv, root, env, root, row.gpus, row.attempt + 1,
                  cpus=res.get("cpus", 1.0), memory_mb=memory_mb, processes=processes)  # fmt: skip


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
            # pid 0: a worker that is no process here (a Ray job, found again by the job's id)
            handle = Handle(row.pid, row.pid_ticks) if row.pid is not None else None
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
        running = None
        held: set[str | None] = set()  # queues whose head waits for its quota: their later jobs wait too
        passed = 0  # queued jobs passed over (held by their queue): the next page starts after them
        # With queues, a page of held queues' jobs must not hide the other queues' jobs behind it (starved
        # while the held queue has 50 waiting): read on, a page at a time, up to SCHEDULE_PAGES pages.
        for _ in range(SCHEDULE_PAGES if self.ctx.settings.queues else 1):
            with self.ctx.store.reading() as s:
                queued = list(
                    s.scalars(
                        select(Job)
                        .where(Job.state == "queued")
                        .order_by(Job.priority.desc(), Job.created_at.asc(), Job.id.asc())
                        .offset(passed)
                        .limit(SCHEDULE_PAGE)
                    )
                )
            for row in queued:
                if self.ctx.settings.queues:
                    if running is None:
                        with self.ctx.store.reading() as s:
                            running = list(s.scalars(select(Job).where(Job.state == "running")))
                    queue = queues.job_queue(row)
                    if queue in held or not queues.fits(self.ctx.settings, row, running):
                        held.add(queue)  # another queue's jobs may still start
                        passed += 1
                        continue
                # Strict order: the head waits for its GPUs rather than be overtaken forever by small jobs.
                if not self.ctx.executor.can_start(row.gpus):
                    return
                self._start(row.id)
                if running is not None:
                    running.append(row)
            if len(queued) < SCHEDULE_PAGE:
                return

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
