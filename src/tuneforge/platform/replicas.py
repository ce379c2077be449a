"""The deployment supervisor: one `tuneforge serve` worker process per replica, on a free loopback port
with its own random key, watched by one thread.

Processes are the executor's (jobs/executor.py, the one supervisor of processes): a replica is a service
it launches, polls, stops and adopts under the name ``deployment:ID/N``. What stays here is what a
replica is beyond a process: readiness, liveness, the restart policy and the gateway's rotation.

A worker is ready when its ``/v2/health/ready`` answers 200. A worker that exits is restarted with
backoff (an event each time); one that never becomes ready three times in a row fails the deployment
with its log tail. On a clean shutdown the workers are terminated and the deployments keep their state,
so the next start brings back those that were up; after a crash of the control plane, live workers
that still answer with their key are adopted and the others are killed and started again.

Liveness: a worker that stays alive but stops answering (a deadlock, a stuck engine thread, SIGSTOP)
would otherwise keep receiving traffic forever. Every ready worker's ``/v2/health/ready`` (503 when its
engine thread is dead or has not stepped for minutes: serve/) is probed every few seconds with a short
timeout. The probes run on a small thread pool and the loop only collects finished ones, so one hung
worker never stalls the supervision of the others. The first failed probe takes the worker out of the
gateway's rotation; one that answers again rejoins it; after ``unresponsive_after`` failures in a row
its process group is SIGKILLed and it is restarted through the crash path (event ``unresponsive``).

GPUs: on a machine with GPUs each replica leases one from the job executor's pool (the one place that
hands out GPU indices) before its launch, gets it as ``CUDA_VISIBLE_DEVICES`` and the executor takes it
back when the worker ends; while none is free the replica waits (event ``waiting``) and a job that needs
one waits in the queue likewise.

Long because: start, readiness, liveness, restart backoff and rotation are one state
machine over the same Slot and Worker under one lock, and each step writes the same rows and events;
cut apart, every piece would reach into the others' state.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from tuneforge.jobs import folder as fmt
from tuneforge.jobs.executor import Executor, Handle, Launch, worker_argv
from tuneforge.jobs.ranks import free_port

from . import deployments as service
from . import rollouts
from .context import Platform
from .db import Deployment, DeploymentReplica
from .ticker import Ticker

log = logging.getLogger(__name__)
MAX_START_FAILURES = 3  # in a row without ever answering ready → the deployment fails
READY_TIMEOUT_S = float(os.environ.get("TUNEFORGE_DEPLOY_READY_TIMEOUT", "900"))
MAX_BACKOFF_S = 30.0
# Liveness of ready workers. A health answer is trivial (no model work), so 2 s without one means the
# process is not being scheduled or its event loop is blocked. A probe every 3 s: a hung worker is out
# of the gateway's rotation within 5 s (the first miss), and killed after three misses in a row, 8 s of
# silence (about 10 s after it hung): long enough that a busy machine's hiccup does not restart a worker
# that holds a warm model (a cold start costs 5-15 s), short enough that requests already sent to it
# (which wait for its answer) do not wait long. The environment variables are for tests.
PROBE_INTERVAL_S = float(os.environ.get("TUNEFORGE_DEPLOY_PROBE_INTERVAL", "3"))
PROBE_TIMEOUT_S = float(os.environ.get("TUNEFORGE_DEPLOY_PROBE_TIMEOUT", "2"))
READY = "/v2/health/ready"
UNRESPONSIVE_AFTER = int(os.environ.get("TUNEFORGE_DEPLOY_UNRESPONSIVE_AFTER", "3"))


@dataclass
class Worker:
    index: int
    port: int
    key: str
    handle: Handle
    executor: Executor  # runs it under ``holder``: launch, poll, stop
    holder: str
    ready: bool = False  # in the gateway's rotation
    started: float = field(default_factory=time.monotonic)
    gpus: list[int] = field(default_factory=list)  # leased from the executor's pool
    ever_ready: bool = False  # once ready, liveness probes decide; before, the start-up checks do
    probe: concurrent.futures.Future | None = None
    probe_sent: float = 0.0
    next_probe: float = 0.0
    missed: int = 0  # liveness probes failed in a row
    silent_since: float | None = None  # when the first of them was sent
    ended: int | None = None  # its exit status once the executor reported it (it reports once)

    def url(self, path: str = "") -> str | None:
        """Where it answers: on the host its executor placed it (None while a cluster has not yet)."""
        host = self.executor.address(self.holder)
        return None if host is None else f"http://{host}:{self.port}{path}"

    def exit_code(self) -> int | None:
        """None while it runs; its exit status once it ended (-1 when unknown: adopted, or gone)."""
        if self.ended is None:
            self._ended(self.executor.poll(self.holder))
        return self.ended

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, SIGKILL after the grace (at once when 0), waited for; its GPUs go back to the pool."""
        self._ended(self.executor.stop(self.holder, grace_s))

    def _ended(self, status) -> None:
        if self.ended is None and (status is None or not status.running):
            self.ended = -1 if status is None or status.exit_code is None else status.exit_code


@dataclass
class Slot:
    """A replica's place: its worker (if any) and the restart bookkeeping."""

    worker: Worker | None = None
    failures: int = 0  # consecutive starts that ended before ready
    restarts: int = 0
    next_start: float = 0.0
    waiting_gpu: bool = False  # the "waiting" event was written for the current wait


def _holder(dep_id: str, index: int) -> str:
    """A replica's name in the executor's GPU pool (job ids never look like this)."""
    return f"deployment:{dep_id}/{index}"


class DeploymentSupervisor(Ticker):
    thread_name = "tuneforge-deployments"

    def __init__(
        self,
        ctx: Platform,
        interval: float = 0.5,
        probe_interval: float = PROBE_INTERVAL_S,
        probe_timeout: float = PROBE_TIMEOUT_S,
        unresponsive_after: int = UNRESPONSIVE_AFTER,
    ):
        super().__init__(interval)
        self.ctx = ctx
        self.probe_interval, self.probe_timeout = probe_interval, probe_timeout
        self.unresponsive_after = max(1, unresponsive_after)
        self._probes = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="tuneforge-probe")
        self._lock = threading.RLock()
        self._slots: dict[str, dict[int, Slot]] = {}
        self._rr: dict[str, itertools.count] = {}
        self._requests: dict[str, int] = {}

    # -- what the gateway and the API ask
    def ready_count(self, dep_id: str) -> int:
        with self._lock:
            return sum(1 for s in self._slots.get(dep_id, {}).values() if s.worker and s.worker.ready)

    def pick(self, dep_id: str) -> Worker | None:
        """A ready worker, round robin."""
        with self._lock:
            ready = [
                s.worker
                for _, s in sorted(self._slots.get(dep_id, {}).items())
                if s.worker and s.worker.ready
            ]
            if not ready:
                return None
            n = next(self._rr.setdefault(dep_id, itertools.count()))
            self._requests[dep_id] = self._requests.get(dep_id, 0) + 1
            return ready[n % len(ready)]

    def workers(self, dep_id: str) -> list[dict]:
        with self._lock:
            slots = sorted(self._slots.get(dep_id, {}).items())
            return [
                {"replica": i, "pid": s.worker.handle.pid, "port": s.worker.port, "ready": s.worker.ready,
                 "restarts": s.restarts, "gpus": s.worker.gpus}
                for i, s in slots
                if s.worker is not None
            ]  # fmt: skip

    def pending_requests(self, dep_id: str) -> int:
        with self._lock:
            return self._requests.get(dep_id, 0)

    def mark_unreachable(self, dep_id: str, worker: Worker) -> None:
        """The gateway could not connect: stop routing to it until the next health check says ready."""
        with self._lock:
            worker.ready = False

    # -- lifecycle
    def stop(self) -> None:
        """Clean shutdown: terminate every worker; deployments keep their state for the next start."""
        super().stop()
        with self._lock:
            dep_ids = list(self._slots)
        for dep_id in dep_ids:
            self.terminate(dep_id, forget=False)
        self._probes.shutdown(wait=False, cancel_futures=True)
        self._flush_requests()

    def next_wait(self) -> float:
        # Poll a starting worker's readiness often: every tenth of a second counts in a cold start.
        return 0.1 if self._starting() else self.interval

    def _starting(self) -> bool:
        with self._lock:
            slots = [s for by_index in self._slots.values() for s in by_index.values()]
            return any(s.worker is not None and not s.worker.ever_ready for s in slots)

    def terminate(self, dep_id: str, forget: bool = True) -> None:
        with self._lock:
            slots = self._slots.pop(dep_id, {}) if forget else dict(self._slots.get(dep_id, {}))
        for slot in slots.values():
            if slot.worker is not None:
                slot.worker.stop()
                slot.worker = None

    def _retire(self, dep_id: str, index: int, slot: Slot) -> None:
        """Stop a replica scaled away, off the supervisor's thread. It is already out of the rotation
        (its slot is gone); SIGTERM lets its server finish the requests it holds (up to the grace)."""
        threading.Thread(target=self._retire_now, args=(dep_id, index, slot), daemon=True).start()

    def _retire_now(self, dep_id: str, index: int, slot: Slot) -> None:
        w = slot.worker
        try:
            if w is not None:
                w.stop()
        except Exception:
            log.exception("deployment %s: stopping replica %d", dep_id, index)
        finally:
            with self.ctx.store.session() as s:
                row = s.get(DeploymentReplica, (dep_id, index))
                if row is not None:
                    s.delete(row)
            if w is not None:
                self._event(dep_id, "scaled", "replica_removed", replica=index, pid=w.handle.pid)
            else:
                self._event(dep_id, "scaled", "replica_removed_unstarted", replica=index)

    def reset(self, dep_id: str) -> None:
        """A (re)start by request: forget past failures."""
        self.terminate(dep_id)

    # -- start of the control plane
    def reconcile(self) -> None:
        with self.ctx.store.reading() as s:
            deps = {d.id: d for d in s.scalars(select(Deployment))}
            rows = list(s.scalars(select(DeploymentReplica)))
        executor = self.ctx.executor
        for r in rows:
            dep = deps.get(r.deployment_id)
            if r.pid is None:
                continue
            handle, holder = Handle(r.pid, r.pid_ticks), _holder(r.deployment_id, r.replica)
            # Its GPU is the one in its environment: the pool must not hand it to anyone else.
            if not executor.adopt(holder, handle, self._gpus_per_replica(), service=True):
                continue  # gone (or its pid is another process now)
            wanted = dep is not None and dep.desired == "running" and dep.state in ("starting", "ready")
            key = self._read_key(r.deployment_id, r.replica)
            host = executor.address(holder)
            if wanted and key and r.port and self._healthy(host and f"http://{host}:{r.port}{READY}"):
                gpus = executor.lease_gpus(holder, self._gpus_per_replica())  # what adopt found it holds
                with self._lock:
                    w = Worker(r.replica, r.port, key, handle, executor, holder, ready=True, gpus=gpus or [],
                               ever_ready=True)  # fmt: skip
                    self._slots.setdefault(dep.id, {})[r.replica] = Slot(w, restarts=r.restarts)
                self._event(dep.id, "ready", "replica_adopted", replica=r.replica, pid=r.pid)
                continue
            log.info("deployment %s: killing stale worker pid %s", r.deployment_id, r.pid)
            executor.stop(holder, grace_s=5)
        for dep in deps.values():
            if dep.desired == "running" and dep.state in ("starting", "ready") and dep.id not in self._slots:
                self._set_state(dep.id, "starting")
                self._event(dep.id, "starting", "control_plane_restarted")

    # -- every tick
    def tick(self) -> None:
        with self.ctx.store.reading() as s:
            deps = list(s.scalars(select(Deployment)))
        known = {d.id for d in deps}
        with self._lock:
            gone = [d for d in self._slots if d not in known]
        for dep_id in gone:
            self.terminate(dep_id)
        for dep in deps:
            if dep.desired != "running" or dep.state == "failed":
                if dep.id in self._slots:
                    self.terminate(dep.id)
                continue
            self._supervise(dep)
        rollouts.advance(self.ctx, deps)  # promotions: decide gates, confirm canaries when due
        self._flush_requests()

    def _supervise(self, dep: Deployment) -> None:
        with self._lock:
            slots = self._slots.setdefault(dep.id, {})
            for i in range(dep.replicas):
                slots.setdefault(i, Slot())
            extra = {i: slots.pop(i) for i in sorted(slots) if i >= dep.replicas}
        for index, slot in extra.items():  # scaled down: the highest replicas go (already out of rotation)
            self._retire(dep.id, index, slot)
        now = time.monotonic()
        for i, slot in sorted(slots.items()):
            w = slot.worker
            if w is None:
                if now >= slot.next_start:
                    self._spawn(dep, slot, i)
                continue
            code = w.exit_code()
            if code is not None:
                self._crashed(dep, slot, code)
                if dep.id not in self._slots:  # the deployment failed
                    return
                continue
            if w.ever_ready:
                self._check_liveness(dep, slot, w)
                if dep.id not in self._slots:  # the deployment failed
                    return
            elif not w.ready:
                if self._healthy(w.url(READY)):
                    w.ready, w.ever_ready, slot.failures = True, True, 0
                    w.next_probe = time.monotonic() + self.probe_interval
                    self._update_replica(dep.id, w, "ready")
                    took = time.monotonic() - w.started
                    seconds = round(took, 1)
                    self._event(dep.id, "ready", "replica_ready", replica=i, port=w.port, seconds=seconds)
                elif now - w.started > READY_TIMEOUT_S:
                    w.stop()  # the next tick restarts it through the crash path
        self._refresh_state(dep)

    def _refresh_state(self, dep: Deployment) -> None:
        ready = self.ready_count(dep.id)
        state = "ready" if ready else "starting"
        if state != dep.state:
            self._set_state(dep.id, state, started=state == "ready")

    def _check_liveness(self, dep: Deployment, slot: Slot, w: Worker) -> None:
        """Send a probe when one is due; act on the one that finished. Never waits for an answer."""
        now = time.monotonic()
        if w.probe is None:
            if now >= w.next_probe:
                w.probe_sent, w.probe = now, self._probes.submit(self._probe, w.url(READY))
            return
        if not w.probe.done():
            return
        problem = w.probe.result()
        # Paced from the send, not the answer: a silent worker is asked every interval, not every
        # interval + timeout.
        sent, w.probe = w.probe_sent, None
        w.next_probe = sent + self.probe_interval
        if problem is None:
            if not w.ready:
                silent = now - (w.silent_since or sent)
                with self._lock:
                    w.ready = True
                self._update_replica(dep.id, w, "ready")
                if w.missed:
                    self._event(dep.id, "ready", "replica_back", replica=w.index, seconds=round(silent, 1))
            w.missed, w.silent_since = 0, None
            return
        w.missed += 1
        w.silent_since = w.silent_since or sent
        silent = now - w.silent_since
        if w.ready:
            with self._lock:
                w.ready = False
            self._update_replica(dep.id, w, "unhealthy")
            pid = w.handle.pid
            self._event(dep.id, "unhealthy", "replica_unhealthy", replica=w.index, pid=pid, problem=problem)
        if w.missed < self.unresponsive_after:
            return
        log.warning("deployment %s: replica %d %s for %.1fs; killing it", dep.name, w.index, problem, silent)
        w.stop(grace_s=0)  # SIGKILL at once: a hung worker would not act on a SIGTERM
        why = f"{problem}; no good answer for {silent:.1f}s ({w.missed} probes in a row): killed"
        self._crashed(dep, slot, 128 + signal.SIGKILL, event="unresponsive", why=why)

    def _probe(self, url: str | None) -> str | None:
        """None when the worker answers ready; else what went wrong (runs on the probe pool)."""
        if url is None:
            return "has no address (its executor lost its node)"
        try:
            r = httpx.get(url, timeout=self.probe_timeout)
        except httpx.TimeoutException:
            return f"did not answer its health check within {self.probe_timeout:g}s"
        except httpx.HTTPError as exc:
            return f"health check failed ({type(exc).__name__})"
        if r.status_code != 200:
            return f"answered {r.status_code} to its health check (engine not running)"
        return None

    def _gpus_per_replica(self) -> int:
        # Every engine runs on a GPU where there is one (vLLM always, transformers puts the model on
        # CUDA when it sees one); a CPU-only machine leases nothing and changes nothing.
        return 1 if self.ctx.executor.gpu_count > 0 else 0

    def _lease_gpus(self, dep: Deployment, slot: Slot, index: int) -> list[int] | None:
        gpus = self.ctx.executor.lease_gpus(_holder(dep.id, index), self._gpus_per_replica())
        if gpus is None:
            if not slot.waiting_gpu:
                slot.waiting_gpu = True
                total = self.ctx.executor.gpu_count
                self._event(dep.id, "waiting", "replica_waiting_gpu", replica=index, gpus=total)
            return None
        slot.waiting_gpu = False
        return gpus

    def _spawn(self, dep: Deployment, slot: Slot, index: int) -> None:
        gpus = self._lease_gpus(dep, slot, index)
        if gpus is None:
            return  # tried again next tick
        root, holder = service.folder(self.ctx, dep.id), _holder(dep.id, index)
        root.mkdir(parents=True, exist_ok=True)
        port, key = free_port(), secrets.token_urlsafe(24)
        argv = worker_argv("serve", dep.base_model, "--host", "127.0.0.1", "--port", str(port))
        base_id = dep.aliases.get("__base__")
        if base_id and base_id != dep.base_model:
            argv += ["--name", base_id]
        for alias, a in dep.adapters.items():
            argv += ["--adapter", f"{alias}={a['path']}"]
        argv += ["--engine", dep.engine]
        for opt in ("max_batch_size", "max_model_len"):
            if dep.options.get(opt):
                argv += [f"--{opt.replace('_', '-')}", str(dep.options[opt])]
        # The executor's environment plus these; CUDA_VISIBLE_DEVICES from the lease on a GPU machine.
        env = {"TUNEFORGE_HOME": str(self.ctx.home), "TUNEFORGE_SERVE_API_KEY": key, "PYTHONUNBUFFERED": "1"}
        key_file = root / f"replica-{index}.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        launch = Launch(holder, argv, root, env, root, len(gpus), service=True,
                        log=self.log_path(dep.id, index), banner=f"start on port {port}")  # fmt: skip
        try:
            handle = self.ctx.executor.submit(launch)
        except OSError as exc:
            self.ctx.executor.release_gpus(holder)
            self._fail(dep.id, f"could not start the worker: {exc}")
            return
        worker = Worker(index, port, key, handle, self.ctx.executor, holder, gpus=gpus)
        # A stop or delete by request (terminate, on the API's thread) may have taken this slot away while
        # the worker was launched; kept in a slot nobody tracks it would run and hold its GPU for ever.
        # Checked and assigned under the lock terminate takes slots with: one of the two stops it.
        with self._lock:
            live = self._slots.get(dep.id, {}).get(index) is slot
            if live:
                slot.worker = worker
        if not live:
            worker.stop(grace_s=0)
            return
        self._update_replica(dep.id, slot.worker, "starting", restarts=slot.restarts)
        log.info("deployment %s: replica %d pid %d port %d", dep.name, index, handle.pid, port)

    def _crashed(
        self, dep: Deployment, slot: Slot, code: int, event: str = "restarted", why: str | None = None
    ) -> None:
        w = slot.worker
        with self._lock:
            slot.worker = None
        tail = fmt.tail_lines(self.log_path(dep.id, w.index), lines=30)
        why = why or f"exited with code {code}"
        if not w.ever_ready:
            slot.failures += 1
        if slot.failures >= MAX_START_FAILURES:
            message = f"replica {w.index} exited with code {code} before ready {slot.failures} times"
            self._fail(dep.id, f"{message}; last lines of its log:\n{tail}")
            return
        slot.restarts += 1
        backoff = min(MAX_BACKOFF_S, 2.0 ** max(0, slot.failures + min(slot.restarts, 4) - 1) / 2)
        slot.next_start = time.monotonic() + backoff
        self._update_replica(dep.id, w, "restarting", restarts=slot.restarts)
        exited = why == f"exited with code {code}"  # the default why: said by its own code, in any language
        self._event(
            dep.id, event, "replica_exited" if exited else "replica_unresponsive",
            replica=w.index, pid=w.handle.pid, seconds=round(backoff, 1), exit_code=code,
            restarts=slot.restarts, **({} if exited else {"why": why}),
        )  # fmt: skip
        with self.ctx.store.session() as s:
            row = s.get(Deployment, dep.id)
            if row is not None:
                row.last_error = f"replica {w.index} {why}:\n{tail}"

    def _fail(self, dep_id: str, message: str) -> None:
        self.terminate(dep_id)
        with self.ctx.store.session() as s:
            row = s.get(Deployment, dep_id)
            if row is None:
                return
            row.state, row.last_error = "failed", message
            service.add_event(s, dep_id, "failed", code="failed", reason=message.splitlines()[0])
        log.warning("deployment %s failed: %s", dep_id, message.splitlines()[0])

    # -- helpers
    def _healthy(self, url: str | None) -> bool:
        if url is None:  # not placed on a node yet
            return False
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _read_key(self, dep_id: str, index: int) -> str | None:
        try:
            return (service.folder(self.ctx, dep_id) / f"replica-{index}.key").read_text().strip()
        except OSError:
            return None

    def log_path(self, dep_id: str, index: int = 0) -> Path:
        return service.folder(self.ctx, dep_id) / f"replica-{index}.log"

    def _event(self, dep_id: str, event: str, code: str, **params) -> None:
        """``code`` and its params: platform/event_codes.py."""
        with self.ctx.store.session() as s:
            if s.get(Deployment, dep_id) is not None:
                service.add_event(s, dep_id, event, code=code, **params)

    def _set_state(self, dep_id: str, state: str, started: bool = False) -> None:
        with self.ctx.store.session() as s:
            row = s.get(Deployment, dep_id)
            if row is None or row.desired != "running" or row.state == "failed":
                return
            row.state = state
            if started:
                row.started_at, row.last_error = time.time(), None

    def _update_replica(self, dep_id: str, w: Worker, state: str, restarts: int | None = None) -> None:
        with self.ctx.store.session() as s:
            if s.get(Deployment, dep_id) is None:
                return
            row = s.get(DeploymentReplica, (dep_id, w.index))
            if row is None:
                row = DeploymentReplica(deployment_id=dep_id, replica=w.index, restarts=0)
                s.add(row)
            row.pid, row.pid_ticks, row.port, row.state = w.handle.pid, w.handle.start_ticks, w.port, state
            if state in ("starting", "restarting"):  # ready / unhealthy keep the worker's start time
                row.started_at = time.time()
            if restarts is not None:
                row.restarts = restarts

    def _flush_requests(self) -> None:
        with self._lock:
            counts, self._requests = self._requests, {}
        if not counts:
            return
        with self.ctx.store.session() as s:
            for dep_id, n in counts.items():
                row = s.get(Deployment, dep_id)
                if row is not None:
                    row.requests = (row.requests or 0) + n
