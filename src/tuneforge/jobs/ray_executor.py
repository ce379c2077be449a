"""The Ray executor: the Executor interface over Ray's job submission API (``TUNEFORGE_EXECUTOR=ray``).

Every Launch (a training job, an evaluation, a user's command, an export, a serving replica) becomes one
Ray job: submission id = the launch's id (``deployment:ID/N`` spelled ``deployment-ID-N``, Ray ids go
in URL paths), entrypoint = the same argv the local executor would run, in its cwd, its output appended
to the same log file in the job folder (``TUNEFORGE_HOME`` is a volume every node mounts, checked at
start-up by ``ray_cluster.check_cluster``), so every reader of a log stays as it is. CPUs, GPUs and memory
are Ray's ``entrypoint_num_*`` reservations; Ray picks the node and the devices.

- ``poll`` asks Ray for the job's status; ``cancel`` / ``stop`` are Ray's ``stop_job`` (SIGTERM to the
  entrypoint's processes, SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S``, which each job's runtime env sets
  to ``stop_wait_s``: the grace is fixed when the job is submitted, not when it is stopped).
- ``adopt`` re-attaches by id after a restart of the control plane: a Ray job that exists is followed
  (one that ended meanwhile reports its end and exit code on the next ``poll``), so no job is lost. A
  submit of an id Ray already holds for the same attempt (the control plane died between the submit and
  its row) is adopted rather than run twice; an earlier attempt's finished Ray job is deleted first.
- A serving replica binds its node's address, not 127.0.0.1 (``--host``'s value is replaced by the
  node's IP, found on the node when it starts); ``address`` reports it for the gateway and the probes.
- A command job gets its env alone (``env -i``): the Ray node's environment, its auth token included,
  does not reach a user's script.

Handles carry pid 0: the worker is not a process on this machine; Ray's job id is the handle.
Ray is imported here only, and only when this executor is built: the control plane starts without it.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tuneforge.errors import require

from . import folder as fmt
from .executor import Executor, Handle, Launch, Status

log = logging.getLogger(__name__)

NODE_IP_VAR = "TUNEFORGE_NODE_IP"
ATTEMPT_KEY = "tuneforge_attempt"  # in the Ray job's metadata: which attempt of the job it runs
LOG_KEY = "tuneforge_log"  # and the log file its output goes to
_RUNNING = {"PENDING", "RUNNING"}
_BAD_ID = re.compile(r"[^A-Za-z0-9_.-]")
# Each request to Ray's job API ends within this. Ray's client sets no timeout: a dashboard that takes
# the connection and never answers would hold the supervisor's tick (every job's and replica's poll)
# or the control plane's start-up for ever. A timeout is an OSError, which the callers treat as Ray
# being away for a moment.
REQUEST_TIMEOUT_S = 30.0


def ray_job_id(job_id: str) -> str:
    """The Ray submission id of a launch: the job id itself (``job-…``); a replica's ``:`` and ``/``
    (Ray puts the id in a URL path) become ``-``."""
    return _BAD_ID.sub("-", job_id)


def _bounded_client(js, address: str, headers: dict[str, str], timeout_s: float):
    """Ray's JobSubmissionClient whose every request (its version check at construction too) carries
    ``timeout_s``; its requests otherwise wait for an answer without end."""

    class BoundedClient(js.JobSubmissionClient):
        def _do_request(self, method, endpoint, **kwargs):
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return BoundedClient(address, headers=headers)


@dataclass
class _Followed:
    service: bool
    status: str = "PENDING"
    host: str | None = None  # the node it runs on, once Ray has placed it


class RayExecutor(Executor):
    def __init__(
        self,
        address: str,
        headers: dict[str, str] | None = None,
        gpu_count: int = 0,
        max_concurrent: int = 8,
        stop_wait_s: int = 30,
    ):
        js = require("ray.job_submission", "ray", "TUNEFORGE_EXECUTOR=ray (the Ray executor)")
        self.dashboard = address.rstrip("/")  # the job API (TUNEFORGE_RAY_ADDRESS)
        self.gpu_count = gpu_count  # the most GPUs one node has: what a job may ask for
        self.max_concurrent = max_concurrent
        self.stop_wait_s = stop_wait_s
        self.client = _bounded_client(js, self.dashboard, dict(headers or {}), REQUEST_TIMEOUT_S)
        self._lock = threading.Lock()
        self._followed: dict[str, _Followed] = {}

    # -- capacity: Ray queues by resources; we submit one at a time past a pending one, up to a cap
    def can_start(self, gpus: int) -> bool:
        with self._lock:
            jobs = [f for f in self._followed.values() if not f.service]
            # A job Ray has not placed yet waits for resources: the next one waits behind it, in our order.
            return len(jobs) < self.max_concurrent and all(f.status != "PENDING" for f in jobs)

    # -- lifecycle
    def submit(self, launch: Launch) -> Handle:
        rid = ray_job_id(launch.job_id)
        launch.folder.mkdir(parents=True, exist_ok=True)
        log_file = launch.log or launch.folder / fmt.WORKER_LOG
        existing = self._info(rid)
        if existing is not None:
            if (existing.metadata or {}).get(ATTEMPT_KEY) == str(launch.attempt):
                # Submitted by a control plane that died before it wrote the row: follow, never rerun.
                log.info("%s: Ray already runs this attempt; following it", launch.job_id)
                self._follow(launch.job_id, launch.service, existing.status.value)
                return Handle(0, None)
            if existing.status.value in _RUNNING:
                raise OSError(f"Ray job {rid} of an earlier attempt is still {existing.status.value}")
            self.client.delete_job(rid)  # an earlier attempt's record: the id is this attempt's now
        banner = launch.banner or f"attempt {launch.attempt}"
        with open(log_file, "ab") as out:
            out.write(f"--- {banner} at {time.strftime('%H:%M:%S')} (Ray job {rid})\n".encode())
        try:
            self.client.submit_job(
                entrypoint=entrypoint(launch, log_file),
                submission_id=rid,
                runtime_env={"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(self.stop_wait_s)}},
                metadata={ATTEMPT_KEY: str(launch.attempt), LOG_KEY: str(log_file)},
                **_entrypoint_reservation(launch),
            )
        except (RuntimeError, ConnectionError) as exc:  # the SDK's errors: HTTP status or no connection
            raise OSError(f"Ray refused the job: {str(exc).splitlines()[0]}") from None
        self._follow(launch.job_id, launch.service, "PENDING")
        log.info("%s: submitted to Ray as %s", launch.job_id, rid)
        return Handle(0, None)

    def _follow(self, job_id: str, service: bool, status: str) -> None:
        with self._lock:
            self._followed[job_id] = _Followed(service, status)

    def _info(self, rid: str):
        """Ray's JobInfo, None when Ray does not know the id."""
        try:
            return self.client.get_job_info(rid)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                return None
            raise

    def poll(self, job_id: str) -> Status | None:
        with self._lock:
            followed = self._followed.get(job_id)
        if followed is None:
            return None
        try:
            info = self._info(ray_job_id(job_id))
        except (RuntimeError, ConnectionError, OSError) as exc:
            # Ray's dashboard is away for a moment: the job still runs as far as anyone knows.
            log.warning("%s: Ray did not answer (%s); asking again next tick", job_id, exc)
            return Status(True)
        if info is None:
            self._forget(job_id)
            return Status(False, None)
        state = info.status.value
        with self._lock:
            followed.status = state
            if followed.host is None and info.driver_agent_http_address:
                followed.host = urlparse(info.driver_agent_http_address).hostname
        if state in _RUNNING:
            return Status(True)
        self._forget(job_id)
        code = info.driver_exit_code
        if code is None or code < 0:  # stopped (by us or a lost node): report it as the signal it was
            code = 128 + 15 if state == "STOPPED" or code == -15 else 128 + 9 if code == -9 else 1
        if state == "FAILED" and info.driver_exit_code is None and info.message:
            # Ray's own reason (no node with the resources, runtime env, node died): into the job's log,
            # where the failure's log tail is read from.
            log.warning("%s: Ray says: %s", job_id, info.message.splitlines()[0])
            log_file = (info.metadata or {}).get(LOG_KEY)
            if log_file:
                with open(log_file, "ab") as out:
                    out.write(f"--- Ray: {info.message[-4000:]}\n".encode())
        return Status(False, code)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._followed.pop(job_id, None)

    def signal(self, job_id: str, sig: int) -> bool:
        """Ray stops a job but sends it no other signal: only a stop is possible (``cancel``)."""
        return False

    def cancel(self, job_id: str, grace_s: float = 30.0) -> None:
        with self._lock:
            if job_id not in self._followed:
                return
        try:
            self.client.stop_job(ray_job_id(job_id))
        except (RuntimeError, OSError) as exc:  # requests' errors (a timeout too) are OSErrors
            log.warning("%s: Ray did not take the stop: %s", job_id, exc)

    def stop(self, job_id: str, grace_s: float = 10.0) -> Status | None:
        if self.poll(job_id) is None:
            return None
        self.cancel(job_id, grace_s)
        with self._lock:  # poll forgets it once it ended; follow it until then
            self._followed.setdefault(job_id, _Followed(service=True))
        deadline = time.monotonic() + self.stop_wait_s + 15
        status = Status(True)
        while time.monotonic() < deadline:
            status = self.poll(job_id) or Status(False, None)
            if not status.running:
                return status
            time.sleep(0.2)
        log.warning("%s: Ray job still not ended %.0fs after its stop", job_id, self.stop_wait_s + 15)
        self._forget(job_id)
        return status

    def adopt(self, job_id: str, handle: Handle, gpus: int = 0, service: bool = False) -> bool:
        try:
            info = self._info(ray_job_id(job_id))
        except (RuntimeError, ConnectionError) as exc:
            log.warning("%s: cannot ask Ray about it: %s", job_id, exc)
            return False
        if info is None:
            return False
        self._follow(job_id, service, info.status.value)  # an ended one reports its end on the next poll
        return True

    def address(self, job_id: str) -> str | None:
        with self._lock:
            followed = self._followed.get(job_id)
            host = followed.host if followed else None
        if host is None and followed is not None:
            self.poll(job_id)  # learns the node once Ray placed it
            with self._lock:
                host = followed.host
        return host

    def lease_gpus(self, holder: str, count: int, pid: int | None = None) -> list[int] | None:
        """Ray places GPUs itself (``entrypoint_num_gpus``); these numbers only count them."""
        return list(range(max(0, count)))


def entrypoint(launch: Launch, log_file: Path) -> str:
    """The shell line Ray runs: the launch's argv in its cwd with its env, output appended to its log.
    A clean env (``inherit_env`` False) keeps only the devices Ray gave it."""
    argv = [shlex.quote(a) for a in launch.argv]
    prelude = ""
    if launch.service and "--host" in launch.argv:
        i = launch.argv.index("--host") + 1
        argv[i] = f'"${NODE_IP_VAR}"'
        # The node's own address, as Ray sees it: the control plane and the gateway reach it there.
        find_ip = "import ray.util; print(ray.util.get_node_ip_address())"
        prelude = f"{NODE_IP_VAR}=$({shlex.quote(launch.argv[0])} -c {shlex.quote(find_ip)}) && "
    env = [shlex.quote(f"{k}={v}") for k, v in launch.env.items()]
    if not launch.inherit_env:
        env = ["-i", '"CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}"', *env]
    cwd = shlex.quote(str(launch.cwd or launch.folder))
    return (
        f"cd {cwd} && {prelude}exec env {' '.join(env)} {' '.join(argv)} >> {shlex.quote(str(log_file))} 2>&1"
    )


def _entrypoint_reservation(launch: Launch) -> dict:
    """What the job's entrypoint reserves on the cluster: the spec's CPUs, GPUs and memory, or nothing for
    the driver of a Ray Train group (its workers reserve their own; see ``Launch.processes``)."""
    if launch.processes > 1:
        return {"entrypoint_num_cpus": 0, "entrypoint_num_gpus": 0}
    return {
        "entrypoint_num_cpus": launch.cpus,
        "entrypoint_num_gpus": launch.gpus,
        "entrypoint_memory": launch.memory_mb << 20 if launch.memory_mb else None,
    }
