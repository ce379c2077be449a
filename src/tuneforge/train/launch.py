"""Several training processes: the same spec, relaunched as the ranks of one DDP group.

`tuneforge train` with more than one process per node (``resources.workers > 1`` on CPU, or
``resources.gpus > 1``) re-executes itself under ``python -m tuneforge.jobs.ranks``, which starts the
ranks with the variables torchrun sets and gives each its own log (``logs/rank-N.txt``); each rank then
runs the same recipe, the HF Trainer does DDP (gloo on CPU, NCCL on GPUs; FSDP or DeepSpeed as the spec
says), and only rank 0 writes the job folder's reports. Several nodes go through torchrun and its usual
rendezvous: MASTER_ADDR, MASTER_PORT and NODE_RANK in the environment of every node.

A spec asking for more GPUs than this machine has is refused here, before anything is started.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.spec import JobSpec

from . import ray_train


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def require_gpus(spec: JobSpec, available: int | None = None) -> None:
    """ConfigError with the figures when the spec asks for more GPUs than this machine has."""
    from tuneforge.jobs.executor import detect_gpus
    from tuneforge.jobs.ranks import gpu_shortfall

    asked = spec.resources.gpus
    if asked == 0:
        return
    if why := gpu_shortfall(asked, detect_gpus() if available is None else available):
        raise ConfigError(
            f"resources.gpus={asked}: {why}. Lower resources.gpus (0 trains on the CPU; "
            "resources.workers runs several CPU processes)."
        )


def distributed_command(
    spec: JobSpec,
    argv: list[str],
    env: dict | None = None,
    folder: Path | None = None,
    gpus_here: int | None = None,
) -> list[str] | None:
    """The command that starts this spec's ranks, or None when it runs in this process.

    ``argv`` is what follows ``train`` on this command line; ``folder`` the job folder (where the ranks'
    logs go: every rank is told it with ``--output`` when ``argv`` does not say it already)."""
    env = os.environ if env is None else env
    r = spec.resources
    if "LOCAL_RANK" in env:  # this is a rank already
        return None
    if ray_train.wanted(spec, env):  # inside a Ray job: Ray Train places the processes (ray_train.py)
        return None
    require_gpus(spec, gpus_here)
    if r.processes <= 1 and r.nodes <= 1:
        return None
    train = [sys.executable, "-m", "tuneforge.cli.main", "train", *argv]
    if r.nodes <= 1:
        if folder is None:
            raise ConfigError("several workers need the job folder for their logs; give --output")
        return [
            sys.executable,
            "-m",
            "tuneforge.jobs.ranks",
            f"--workers={r.processes}",
            f"--folder={folder}",
            "--",
            *train,
        ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={max(1, r.gpus)}",
        f"--nnodes={r.nodes}",
    ]
    missing = [k for k in ("MASTER_ADDR", "NODE_RANK") if k not in env]
    if missing:
        raise ConfigError(
            f"resources.nodes={r.nodes} needs {' and '.join(missing)} set on every node "
            "(the address of node 0, and this node's rank 0…N-1)."
        )
    cmd += [
        f"--node_rank={env['NODE_RANK']}",
        f"--master_addr={env['MASTER_ADDR']}",
        f"--master_port={env.get('MASTER_PORT', '29500')}",
    ]
    return cmd + train[1:]
