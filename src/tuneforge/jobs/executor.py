"""The executor: the one supervisor of worker processes, for finite work and long-lived services.

A worker is an argv + env + cwd that reports through its folder. Finite work (a training job, an
evaluation, a user's command) runs until it exits; a service (a serving replica) runs until it is stopped
and does not count against the limit of concurrent jobs. Both go through the same interface:

- ``submit`` (launch) a Launch → a Handle to find it again; ``poll`` its Status (reaped and forgotten
  once it has reported its end);
- ``signal`` its process group; ``cancel`` (SIGTERM, SIGKILL after a grace, in the background: ``poll``
  reports the end) or ``stop`` (the same, waited for; the worker and its GPUs are forgotten);
- ``adopt`` a worker started by an earlier control plane (its Handle was stored);
- ``lease_gpus`` / ``release_gpus``: one pool of GPU indices for jobs and services; a lease taken
  under a worker's id before its launch is the GPUs that launch gets.

The local implementation runs subprocesses on this machine, each in its own process group, with GPU slots
handed out through ``CUDA_VISIBLE_DEVICES``. The Ray executor (ray_executor.py) implements the same
methods. Nothing here knows what a JobSpec or a deployment is: all of them are a Launch.
"""

from __future__ import annotations

import logging
import os
import signal as signals
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from . import folder as fmt

log = logging.getLogger(__name__)

# `tuneforge …` as a worker runs it: this interpreter and this installation, not whatever is on PATH.
WORKER = [sys.executable, "-m", "tuneforge.cli.main"]


def worker_argv(*args: str) -> list[str]:
    """The argv of a `tuneforge ARGS` worker (train, eval, serve, models pull …)."""
    return [*WORKER, *args]


@dataclass
class Launch:
    job_id: str
    argv: list[str]
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    gpus: int = 0
    attempt: int = 1
    # False: the worker gets ``env`` alone (+ CUDA_VISIBLE_DEVICES), not the control plane's environment.
    # A user's own command gets a clean one so the server's secrets and settings do not leak into it.
    inherit_env: bool = True
    service: bool = False  # a long-lived service (a serving replica): outside the concurrent-job limit
    log: Path | None = None  # where its output goes; the folder's worker log when None
    banner: str | None = None  # the log line that opens this start; "attempt N" when None
    cpus: float = 1.0  # what a cluster executor (Ray) reserves for it; the local one ignores both
    memory_mb: int | None = None
    processes: int = 1  # training processes it starts; > 1 on Ray: a Ray Train driver (ray_executor.py)


@dataclass
class Handle:
    """How to find a worker again after a restart of the control plane."""

    pid: int
    start_ticks: int | None  # /proc start time: guards against a recycled pid


@dataclass
class Status:
    running: bool
    exit_code: int | None = None  # None when the worker was not our child (adopted) or is unknown


class Executor(ABC):
    gpu_count: int = 0

    @abstractmethod
    def can_start(self, gpus: int) -> bool:
        """Whether a job (not a service) asking for ``gpus`` would start now."""

    @abstractmethod
    def submit(self, launch: Launch) -> Handle:
        """Start a worker (raises OSError when it cannot be started)."""

    @abstractmethod
    def poll(self, job_id: str) -> Status | None:
        """None when this executor does not know the job (never started here, or forgotten)."""

    @abstractmethod
    def signal(self, job_id: str, sig: int) -> bool:
        """Send ``sig`` to the worker's process group; False when it is unknown or gone."""

    @abstractmethod
    def cancel(self, job_id: str, grace_s: float = 30.0) -> None:
        """SIGTERM, SIGKILL after ``grace_s``; returns at once, ``poll`` reports the end."""

    @abstractmethod
    def stop(self, job_id: str, grace_s: float = 10.0) -> Status | None:
        """SIGTERM, SIGKILL after ``grace_s`` (at once when 0), waited for; then the worker and its GPUs
        (or a lease under its id) are forgotten. Its last Status; None when it was not known."""

    @abstractmethod
    def adopt(self, job_id: str, handle: Handle, gpus: int = 0, service: bool = False) -> bool:
        """Follow a worker started by an earlier control plane; False when it is gone."""

    def address(self, job_id: str) -> str | None:
        """Where a worker's ports answer: here; on a cluster, its node (None until it is placed)."""
        return "127.0.0.1"

    def logs(self, folder: Path, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
        return fmt.read_bytes(Path(folder) / fmt.WORKER_LOG, offset, limit)

    def shutdown(self) -> None:  # noqa: B027 (optional for implementations)
        """Stop following workers; they keep running and are adopted on the next start."""

    def lease_gpus(self, holder: str, count: int, pid: int | None = None) -> list[int] | None:
        """GPU indices for a holder (a serving replica about to start), from the same pool as jobs;
        None while not enough are free. An executor without local GPUs hands out none."""
        return [] if count <= 0 else None

    def release_gpus(self, holder: str) -> None:  # noqa: B027 (optional for implementations)
        """Give back what ``lease_gpus`` handed to ``holder`` (nothing when it holds none)."""


def detect_gpus() -> int:
    """GPUs on this machine without importing torch: the driver's /proc entries, else nvidia-smi."""
    forced = os.environ.get("TUNEFORGE_GPUS")
    if forced is not None:
        return int(forced)
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir()))
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def process_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses; the fields after the last ')' are fixed.
    rest = stat.rsplit(")", 1)[1].split()
    if rest[0] == "Z":  # a zombie has exited
        return None
    return int(rest[19])


def visible_gpus_of(pid: int) -> list[int] | None:
    """The GPU indices a running process was given (its CUDA_VISIBLE_DEVICES), None when unknown: how
    an adopted worker's GPUs are found again after a restart of the control plane."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"CUDA_VISIBLE_DEVICES="):
            value = item.split(b"=", 1)[1].decode(errors="replace").strip()
            try:
                return [int(g) for g in value.split(",") if g.strip()]
            except ValueError:  # UUIDs or names: not ours
                return None
    return None


def alive(handle: Handle) -> bool:
    ticks = process_start_ticks(handle.pid)
    return ticks is not None and (handle.start_ticks is None or ticks == handle.start_ticks)


class _Group:
    """A worker's process group as found when it was asked to end: its pid checked once, so that a
    recycled pid is never signalled (the group's id stays taken while any member of it lives)."""

    def __init__(self, pid: int, proc: subprocess.Popen | None):
        self.pid, self.proc = pid, proc

    def send(self, sig: int) -> bool:
        return _signal_group(self.pid, sig)

    def gone(self) -> bool:
        if self.proc is not None:
            if self.proc.poll() is None:  # reaps our child: its zombie would keep the group alive
                return False
        elif process_start_ticks(self.pid) is not None:
            return False
        # The whole group, not only its leader: a shell that dies on SIGTERM may leave a child that
        # ignores it (a user's own script), which the SIGKILL must still reach.
        return not _group_alive(self.pid)

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.gone():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


class LocalExecutor(Executor):
    def __init__(self, max_concurrent: int | None = None, gpu_count: int | None = None):
        self.gpu_count = detect_gpus() if gpu_count is None else gpu_count
        default = max(1, self.gpu_count)
        env_value = os.environ.get("TUNEFORGE_MAX_CONCURRENT_JOBS")
        self.max_concurrent = max_concurrent or (int(env_value) if env_value else default)
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen] = {}
        self._adopted: dict[str, Handle] = {}
        self._services: set[str] = set()  # ids of the workers above that are services, not jobs
        # Holder → GPU indices: jobs and services by id, and leases taken for a service before its
        # launch, so that one pool decides who runs where and a job waits while deployments hold every GPU.
        self._gpus: dict[str, list[int]] = {}

    # -- capacity
    def _gpus_needed(self, gpus: int) -> int:
        # Resources.gpus == 0 means "CPU, or one GPU if the machine has one".
        return gpus if gpus > 0 else (1 if self.gpu_count else 0)

    def _free_gpus(self) -> list[int]:
        used = {g for slots in self._gpus.values() for g in slots}
        return [g for g in range(self.gpu_count) if g not in used]

    def running_count(self) -> int:
        """Running jobs (services do not count against ``max_concurrent``)."""
        return sum(1 for j in (*self._children, *self._adopted) if j not in self._services)

    def can_start(self, gpus: int) -> bool:
        with self._lock:
            if self.running_count() >= self.max_concurrent:
                return False
            return len(self._free_gpus()) >= self._gpus_needed(gpus)

    # -- lifecycle
    def submit(self, launch: Launch) -> Handle:
        with self._lock:
            slots = self._gpus.get(launch.job_id)  # leased for it before its launch
            if slots is None:
                slots = self._free_gpus()[: self._gpus_needed(launch.gpus)]
            env = {**os.environ, **launch.env} if launch.inherit_env else dict(launch.env)
            if self.gpu_count or not launch.inherit_env:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slots))
            launch.folder.mkdir(parents=True, exist_ok=True)
            banner = launch.banner or f"attempt {launch.attempt}"
            with open(launch.log or launch.folder / fmt.WORKER_LOG, "ab") as out:
                out.write(f"--- {banner} at {time.strftime('%H:%M:%S')}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(launch.cwd or launch.folder),
                    # its own process group: a stop reaches torchrun's children, the server's Ctrl-C does not
                    start_new_session=True,
                )
            self._children[launch.job_id] = proc
            self._gpus[launch.job_id] = slots
            if launch.service:
                self._services.add(launch.job_id)
        log.info("%s: started pid %s (gpus %s)", launch.job_id, proc.pid, slots or "none")
        return Handle(proc.pid, process_start_ticks(proc.pid))

    def poll(self, job_id: str) -> Status | None:
        with self._lock:
            proc = self._children.get(job_id)
            if proc is not None:
                code = proc.poll()
                if code is None:
                    return Status(True)
                self._forget(job_id)
                # A worker killed by a signal reports -N; shells say 128+N: keep the shell's convention.
                return Status(False, code if code >= 0 else 128 - code)
            handle = self._adopted.get(job_id)
            if handle is not None:
                if alive(handle):
                    return Status(True)
                self._forget(job_id)
                return Status(False, None)
        return None

    def _forget(self, job_id: str) -> None:
        self._children.pop(job_id, None)
        self._adopted.pop(job_id, None)
        self._services.discard(job_id)
        self._gpus.pop(job_id, None)

    def _group(self, job_id: str) -> _Group | None:
        with self._lock:
            proc, handle = self._children.get(job_id), self._adopted.get(job_id)
        if proc is not None:
            return _Group(proc.pid, proc)
        if handle is not None and alive(handle):
            return _Group(handle.pid, None)
        return None

    def signal(self, job_id: str, sig: int) -> bool:
        group = self._group(job_id)
        return group is not None and group.send(sig)

    def cancel(self, job_id: str, grace_s: float = 30.0) -> None:
        group = self._group(job_id)
        if group is None:
            return
        group.send(signals.SIGTERM)
        threading.Thread(
            target=self._escalate, args=(job_id, group, grace_s), name=f"cancel-{job_id}", daemon=True
        ).start()

    def stop(self, job_id: str, grace_s: float = 10.0) -> Status | None:
        group = self._group(job_id)
        if group is not None:
            if grace_s > 0:
                group.send(signals.SIGTERM)
            self._escalate(job_id, group, grace_s)
        status = self.poll(job_id)  # reaps and forgets a worker that ended
        with self._lock:
            self._forget(job_id)  # and one that did not, or a lease taken for it
        return status

    def _escalate(self, job_id: str, group: _Group, grace_s: float) -> None:
        """After the SIGTERM: SIGKILL when the group is still there after ``grace_s``; wait for its end."""
        if group.wait_gone(grace_s):
            return
        if grace_s > 0:
            log.warning("%s: still running %.0fs after SIGTERM; sending SIGKILL", job_id, grace_s)
        group.send(signals.SIGKILL)
        if not group.wait_gone(10.0):
            log.warning("%s: process group %s still there 10 s after SIGKILL", job_id, group.pid)

    def adopt(self, job_id: str, handle: Handle, gpus: int = 0, service: bool = False) -> bool:
        if not alive(handle):
            return False
        with self._lock:
            self._adopted[job_id] = handle
            if job_id not in self._gpus:
                self._gpus[job_id] = self._gpus_of(handle.pid, self._gpus_needed(gpus))
            if service:
                self._services.add(job_id)
        return True

    def _gpus_of(self, pid: int, count: int) -> list[int]:
        """What an adopted process really uses (its environment), else the first free ones."""
        known = visible_gpus_of(pid) if self.gpu_count else None
        if known is not None and all(0 <= g < self.gpu_count for g in known):
            return known
        return self._free_gpus()[:count]

    def lease_gpus(self, holder: str, count: int, pid: int | None = None) -> list[int] | None:
        """``count`` free GPUs for ``holder`` (a serving replica), or None while not enough are free;
        what it already holds when it asks again (a worker launched or adopted under that id); with
        ``pid``, the GPUs that running process was given (adoption after a restart)."""
        if self.gpu_count == 0 or count <= 0:
            return []
        with self._lock:
            if holder in self._gpus:
                return self._gpus[holder]
            if pid is not None:
                self._gpus[holder] = self._gpus_of(pid, count)
                return self._gpus[holder]
            free = self._free_gpus()
            if len(free) < count:
                return None
            self._gpus[holder] = free[:count]
            return self._gpus[holder]

    def release_gpus(self, holder: str) -> None:
        with self._lock:
            self._gpus.pop(holder, None)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pid: int, sig: int) -> bool:
    """False when the group is gone (or not ours to signal)."""
    try:
        os.killpg(pid, sig)  # start_new_session made the worker its group's leader
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("cannot signal process group %s", pid)
        return False
    return True
