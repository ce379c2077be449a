"""The ranks of a job: N copies of one command on this machine, started the way torchrun starts them.

``rank_env`` is the one place that names the variables a rank reads (``MASTER_ADDR``, ``MASTER_PORT``,
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``): HF Trainer and ``torch.distributed``'s
``env://`` rendezvous need nothing else, and a user's own script reads the same. ``run_ranks`` starts
the copies, writes each one's output to its own log (``logs/rank-N.txt``, names from ``folder.py``) and
rank 0's also to this process's output (a job's ``worker.log``), and ends them together: when one rank
fails the others are stopped (SIGTERM, SIGKILL after a grace), as a rank blocked in a collective would
otherwise wait for the dead one for ever. The exit code is the first failure's.

Used by ``tuneforge train`` (``resources.workers``, one node) and by the command-job runner
(``--workers N``). Standard library only: the control plane imports it.

    python -m tuneforge.jobs.ranks --workers N --folder ROOT -- COMMAND …
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import folder as fmt

MAX_WORKERS = 64  # processes on one machine: far past any core count this runs on
PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 10.0


def gpu_shortfall(asked: int, available: int) -> str | None:
    """The one wording of a job asking more GPUs than this machine has (None when it fits)."""
    if asked <= available:
        return None
    return f"asks {asked} GPU{'s' if asked != 1 else ''}, this machine has {available}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now: rank 0's rendezvous, a replica's or a local server's port."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rank_env(
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    local_rank: int | None = None,
    local_world_size: int | None = None,
) -> dict[str, str]:
    """The variables rank ``rank`` of ``world_size`` runs with (what torchrun sets)."""
    return {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank if local_rank is None else local_rank),
        "LOCAL_WORLD_SIZE": str(world_size if local_world_size is None else local_world_size),
    }


def threads_per_rank(world_size: int) -> str:
    """OMP_NUM_THREADS for one of ``world_size`` ranks sharing this machine's CPUs (torch's default is
    every core in each rank: N ranks would each run that many threads on the same cores)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return str(max(1, cpus // world_size))


def die_with_parent() -> None:
    """In a child (after fork, before exec): its parent killed with SIGKILL takes it along, so no rank or
    command keeps running unfollowed once the control plane sees the parent gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _say(message: str) -> None:
    sys.stderr.write(f"tuneforge: {message}\n")
    sys.stderr.flush()


def _pump(source, log_path: Path, echo) -> None:
    """Copy a rank's output to its log (and rank 0's to ours) as it comes, unbuffered."""
    with open(log_path, "ab", buffering=0) as log:
        while chunk := source.read1(1 << 16):
            log.write(chunk)
            if echo is not None:
                try:
                    echo.write(chunk)
                    echo.flush()
                except (OSError, ValueError):  # our own output is gone: the rank's log still gets it
                    echo = None


class Ranks:
    """N running copies of a command; ``wait`` ends them together."""

    def __init__(self, argv: list[str], world_size: int, folder: Path, env: dict | None = None):
        if not 1 <= world_size <= MAX_WORKERS:
            raise ValueError(f"workers must be 1…{MAX_WORKERS}; got {world_size}")
        self.world_size = world_size
        self.folder = Path(folder)
        base = dict(os.environ if env is None else env)
        base.setdefault("OMP_NUM_THREADS", threads_per_rank(world_size))
        addr, port = base.get("MASTER_ADDR", "127.0.0.1"), free_port()
        fmt.rank_log(self.folder, 0).parent.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.pumps: list[threading.Thread] = []
        for rank in range(world_size):
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**base, **rank_env(rank, world_size, addr, port)},
                preexec_fn=die_with_parent,  # same process group: a stop of the job reaches every rank
            )
            echo = sys.stdout.buffer if rank == 0 else None
            pump = threading.Thread(
                target=_pump, args=(proc.stdout, fmt.rank_log(self.folder, rank), echo), daemon=True
            )
            pump.start()
            self.procs.append(proc)
            self.pumps.append(pump)

    def signal(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def wait(self, grace_s: float = STOP_GRACE_S) -> int:
        """Until every rank has ended; the first failure's exit code (128+N for signal N), else 0."""
        failed: tuple[int, int] | None = None
        while True:
            codes = [p.poll() for p in self.procs]
            if failed is None:
                for rank, code in enumerate(codes):
                    if code not in (None, 0):
                        failed = (rank, code if code >= 0 else 128 - code)
                        if any(c is None for c in codes):
                            _say(
                                f"rank {rank} ended with exit code {failed[1]}; stopping the other ranks "
                                f"(its log: {fmt.rank_log(self.folder, rank)})"
                            )
                            self._stop(grace_s)
                        break
            if all(c is not None for c in codes):
                break
            time.sleep(0.05)
        for pump in self.pumps:
            pump.join(timeout=5)
        if failed is None:
            return 0
        rank, code = failed
        if rank != 0:  # rank 0's output is already in ours; the cause may be only in this rank's log
            tail = fmt.tail_lines(fmt.rank_log(self.folder, rank), lines=20)
            _say(f"rank {rank} ended with exit code {code}; the end of its log:\n{tail}")
        return code

    def _stop(self, grace_s: float) -> None:
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.05)
        self.signal(signal.SIGKILL)


def run_ranks(argv: list[str], world_size: int, folder: Path, env: dict | None = None) -> int:
    """Start ``world_size`` copies of ``argv`` and wait for them; the exit code of the group."""
    return Ranks(argv, world_size, folder, env).wait()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or not argv[argv.index("--") + 1 :]:
        raise SystemExit("usage: python -m tuneforge.jobs.ranks --workers N --folder ROOT -- COMMAND …")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(prog="tuneforge.jobs.ranks")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args(argv[:cut])
    ranks = Ranks(argv[cut + 1 :], args.workers, args.folder)
    _say(f"{args.workers} ranks started; each one's log is in {args.folder / fmt.LOGS_DIR}")
    # A stop sent to this process alone (not to the job's group) still reaches every rank.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: ranks.signal(signum))
    sys.exit(ranks.wait())


if __name__ == "__main__":
    main()
