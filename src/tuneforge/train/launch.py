"""Multi-GPU and multi-node runs: the same spec, relaunched under torchrun.

`tuneforge train` with ``resources.gpus > 1`` (or ``nodes > 1``) re-executes itself as
``python -m torch.distributed.run … -m tuneforge.cli.main train …``; each rank then runs the same
recipe, the trainer picks DDP, FSDP or DeepSpeed from the spec, and only rank 0 writes the job
folder's reports. Several nodes need the usual torchrun rendezvous: MASTER_ADDR, MASTER_PORT and
NODE_RANK in the environment of every node.
"""

from __future__ import annotations

import os
import sys

from tuneforge.errors import ConfigError
from tuneforge.spec import JobSpec

from . import ray_train


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def distributed_command(spec: JobSpec, argv: list[str], env: dict | None = None) -> list[str] | None:
    """The torchrun command for this spec, or None when it runs in this process."""
    env = os.environ if env is None else env
    r = spec.resources
    if (r.gpus <= 1 and r.nodes <= 1) or "LOCAL_RANK" in env:
        return None
    if ray_train.wanted(spec, env):  # inside a Ray job: Ray Train places the processes (ray_train.py)
        return None
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={max(1, r.gpus)}",
        f"--nnodes={r.nodes}",
    ]
    if r.nodes > 1:
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
    return cmd + ["-m", "tuneforge.cli.main", "train", *argv]
