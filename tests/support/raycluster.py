"""A real two-node Ray cluster on 127.0.0.1 for the Ray executor's tests: a head (GCS, dashboard with the
job API) and a second node process, 1 CPU and a 100 MB object store each, token authentication on.

Every port is a free one (other Ray clusters may run on this machine at the same time), the temp dir is
a fresh short one under /tmp (Ray's unix sockets live in it, and a socket path must stay under 108
bytes: a pytest tmp_path is too deep), and ``stop`` ends this cluster's processes only, by their pids
(found by the temp dir or the GCS port in their command lines, with their children): ``ray stop`` would
end every Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tuneforge.jobs.ranks import free_port

RAY = str(Path(sys.executable).with_name("ray"))


# How far ahead of the suite's processes the cluster starts as root: `nice -n -10` (relative to this one).
START_PRIORITY = 10


def _ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


class RayTestCluster:
    def __init__(self):
        self.temp = Path(tempfile.mkdtemp(prefix="tfray-", dir="/tmp"))
        self.token = secrets.token_hex(16)
        (self.gcs, self.dash, self.client_port, *self._node_ports) = _ports(3 + 2 * 6)
        self.address = f"http://127.0.0.1:{self.dash}"  # the job API (TUNEFORGE_RAY_ADDRESS)
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # a stopped job's SIGKILL comes this long after its SIGTERM (jobs set their own; this is Ray's)
            "RAY_JOB_STOP_WAIT_TIME_S": "10",
            # Ray's OOM killer counts the whole machine's memory: the suite's other tests on it once took
            # it past 95% and Ray killed this cluster's workers. The tests bound their own memory.
            "RAY_memory_monitor_refresh_ms": "0",
            # Ray starts its workers at niceness 15 (behind the raylet): beside the suite's two busy test
            # workers (make test runs this file in a lane of its own) they got ~3% of a core and the
            # two-node test missed its checkpoints' deadlines. The suite's processes run at one priority.
            "RAY_worker_niceness": "0",
        }

    def _node_args(self, i: int) -> list[str]:
        nm, om, metrics, agent, agent_grpc, runtime_env = self._node_ports[6 * i : 6 * i + 6]
        return [
            "--num-cpus", "1", "--object-store-memory", str(100 << 20), "--disable-usage-stats",
            "--node-manager-port", str(nm), "--object-manager-port", str(om),
            "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(agent),
            "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
            "--temp-dir", str(self.temp),
        ]  # fmt: skip

    def _ray(self, *args: str) -> None:
        ahead = ["nice", "-n", str(-START_PRIORITY)] if os.geteuid() == 0 else []  # its daemons inherit it
        argv = [*ahead, RAY, "start", *args]
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(
                f"ray start {' '.join(args[:2])} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )

    def start(self, tries: int = 3) -> RayTestCluster:
        # `ray start` gives a raylet 30 s (fixed in Ray) to register: on a machine loaded far past its
        # cores it may miss that; a start from scratch is cheaper than a failed module. `make test` runs
        # this file beside the suite's two workers, so the cluster starts while they load both cores:
        # as root (CI) its processes start ahead of them (START_PRIORITY) and go back to the
        # suite's priority once both nodes are up.
        for attempt in range(1, tries + 1):
            self.attempts = attempt  # the fixture prints it: a start under load shows in CI's log
            try:
                self._ray(
                    "--head", "--port", str(self.gcs), "--include-dashboard", "true",
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash),
                    "--ray-client-server-port", str(self.client_port), *self._node_args(0),
                )  # fmt: skip
                self._ray("--address", f"127.0.0.1:{self.gcs}", *self._node_args(1))
                self._renice(os.getpriority(os.PRIO_PROCESS, 0))
                return self
            except BaseException:
                self.stop(keep_temp=attempt < tries)
                if attempt == tries:
                    raise
        return self

    def _renice(self, value: int) -> None:
        for p in self.processes():
            try:
                p.nice(value)
            except psutil.Error:
                pass

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes: those naming its temp dir or its GCS port, and their children."""
        marks = (str(self.temp), f":{self.gcs}")
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if p.pid != os.getpid() and any(m in cmd for m in marks):
                found[p.pid] = p
                try:
                    found.update((c.pid, c) for c in p.children(recursive=True))
                except psutil.Error:
                    pass
        return list(found.values())

    def memory_mb(self) -> dict[str, int]:
        """RSS by process name (MiB), summed: what Ray costs on this machine."""
        by_name: dict[str, int] = {}
        self.pss = 0  # proportional set size: shared pages counted once (the forked dashboard modules)
        for p in self.processes():
            try:
                name = Path((p.cmdline() or [p.name()])[0]).name
                if name.startswith("python"):
                    script = next((Path(a).name for a in p.cmdline()[1:] if a.endswith(".py")), p.name())
                    name = script
                by_name[name] = by_name.get(name, 0) + p.memory_info().rss
                self.pss += getattr(p.memory_full_info(), "pss", 0)
            except psutil.Error:
                continue
        return {k: v >> 20 for k, v in sorted(by_name.items())}

    def stop(self, keep_temp: bool = False) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        if not keep_temp:
            shutil.rmtree(self.temp, ignore_errors=True)


def wait_ray_status(client, rid: str, states: set[str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_job_status(rid).value
        if status in states or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
