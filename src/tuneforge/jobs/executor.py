"""Executors run workers: an argv + env + cwd that report through a job folder.

The interface is what the control plane needs (capacity, submit, poll, cancel, adopt, logs); the local
implementation runs subprocesses on this machine, each in its own process group, with GPU slots handed
out through ``CUDA_VISIBLE_DEVICES``. A Ray executor implements the same methods. Nothing here knows
what a JobSpec is: a training job, an evaluation and (later) a user's own command are all a Launch.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from . import folder as fmt

log = logging.getLogger(__name__)


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
    def can_start(self, gpus: int) -> bool: ...

    @abstractmethod
    def submit(self, launch: Launch) -> Handle: ...

    @abstractmethod
    def poll(self, job_id: str) -> Status | None:
        """None when this executor does not know the job (never started here, or forgotten)."""

    @abstractmethod
    def cancel(self, job_id: str, grace_s: float = 30.0) -> None: ...

    @abstractmethod
    def adopt(self, job_id: str, handle: Handle, gpus: int = 0) -> bool:
        """Follow a worker started by an earlier control plane; False when it is gone."""

    def logs(self, folder: Path, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
        return fmt.read_bytes(Path(folder) / fmt.WORKER_LOG, offset, limit)

    def shutdown(self) -> None:  # noqa: B027 (optional for implementations)
        """Stop following workers; they keep running and are adopted on the next start."""

    def lease_gpus(self, holder: str, count: int, pid: int | None = None) -> list[int] | None:
        """GPU indices for a holder that is not a job (a serving replica), from the same pool as jobs;
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


class LocalExecutor(Executor):
    def __init__(self, max_concurrent: int | None = None, gpu_count: int | None = None):
        self.gpu_count = detect_gpus() if gpu_count is None else gpu_count
        default = max(1, self.gpu_count)
        env_value = os.environ.get("TUNEFORGE_MAX_CONCURRENT_JOBS")
        self.max_concurrent = max_concurrent or (int(env_value) if env_value else default)
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen] = {}
        self._adopted: dict[str, Handle] = {}
        # Holder → GPU indices: jobs by id, and leases of other holders (serving replicas), so that one
        # pool decides who runs where and a job waits while deployments hold every GPU.
        self._gpus: dict[str, list[int]] = {}

    # -- capacity
    def _gpus_needed(self, gpus: int) -> int:
        # Resources.gpus == 0 means "CPU, or one GPU if the machine has one".
        return gpus if gpus > 0 else (1 if self.gpu_count else 0)

    def _free_gpus(self) -> list[int]:
        used = {g for slots in self._gpus.values() for g in slots}
        return [g for g in range(self.gpu_count) if g not in used]

    def running_count(self) -> int:
        return len(self._children) + len(self._adopted)

    def can_start(self, gpus: int) -> bool:
        with self._lock:
            if self.running_count() >= self.max_concurrent:
                return False
            return len(self._free_gpus()) >= self._gpus_needed(gpus)

    # -- lifecycle
    def submit(self, launch: Launch) -> Handle:
        with self._lock:
            slots = self._free_gpus()[: self._gpus_needed(launch.gpus)]
            env = {**os.environ, **launch.env} if launch.inherit_env else dict(launch.env)
            if self.gpu_count or not launch.inherit_env:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slots))
            launch.folder.mkdir(parents=True, exist_ok=True)
            with open(launch.folder / fmt.WORKER_LOG, "ab") as out:
                out.write(f"--- attempt {launch.attempt} at {time.strftime('%H:%M:%S')}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(launch.cwd or launch.folder),
                    start_new_session=True,  # its own process group: cancel reaches torchrun's children
                )
            self._children[launch.job_id] = proc
            self._gpus[launch.job_id] = slots
        log.info("job %s: started pid %s (gpus %s)", launch.job_id, proc.pid, slots or "none")
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
        self._gpus.pop(job_id, None)

    def _pid(self, job_id: str) -> int | None:
        with self._lock:
            if job_id in self._children:
                return self._children[job_id].pid
            if job_id in self._adopted:
                return self._adopted[job_id].pid
        return None

    def cancel(self, job_id: str, grace_s: float = 30.0) -> None:
        pid = self._pid(job_id)
        if pid is None:
            return
        _signal_group(pid, signal.SIGTERM)

        def escalate():
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                # The whole group, not only its leader: a shell that dies on SIGTERM may leave a child
                # that ignores it (a user's own script), which the SIGKILL below must still reach.
                if process_start_ticks(pid) is None and not _group_alive(pid):
                    return
                time.sleep(0.2)
            log.warning("job %s: still running %.0fs after SIGTERM; sending SIGKILL", job_id, grace_s)
            _signal_group(pid, signal.SIGKILL)

        threading.Thread(target=escalate, name=f"cancel-{job_id}", daemon=True).start()

    def adopt(self, job_id: str, handle: Handle, gpus: int = 0) -> bool:
        if not alive(handle):
            return False
        with self._lock:
            self._adopted[job_id] = handle
            self._gpus[job_id] = self._gpus_of(handle.pid, self._gpus_needed(gpus))
        return True

    def _gpus_of(self, pid: int, count: int) -> list[int]:
        """What an adopted process really uses (its environment), else the first free ones."""
        known = visible_gpus_of(pid) if self.gpu_count else None
        if known is not None and all(0 <= g < self.gpu_count for g in known):
            return known
        return self._free_gpus()[:count]

    def lease_gpus(self, holder: str, count: int, pid: int | None = None) -> list[int] | None:
        """``count`` free GPUs for ``holder`` (a serving replica), or None while not enough are free;
        with ``pid``, the GPUs that running process was given (adoption after a restart)."""
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


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session made the worker its group's leader
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("cannot signal process group %s", pid)
