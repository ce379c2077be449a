"""The storage probe, run on the Ray cluster as a Ray job (``python -m tuneforge.jobs.ray_probe FILE TEXT``):
one task pinned to each alive node reads the marker file the control plane wrote under TUNEFORGE_HOME and
says whether it holds TEXT. Prints one line, ``PREFIX {json}``, that ``ray_cluster`` reads from the job's
logs: every node with its IP, GPUs and what it saw.
"""

from __future__ import annotations

import json
import sys

PREFIX = "TUNEFORGE_STORAGE_PROBE"


def read_marker(path: str, text: str) -> str | None:
    """None when ``path`` holds ``text``; else what this node sees there."""
    try:
        with open(path, encoding="utf-8") as fh:
            got = fh.read(256)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None if got == text else "the file there holds something else (another volume)"


def main(path: str, text: str) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(log_to_driver=False)  # the job's RAY_ADDRESS and token
    read = ray.remote(num_cpus=0)(read_marker)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [
        read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            path, text
        )
        for n in nodes
    ]
    report = []
    for node, ref in zip(nodes, refs, strict=True):
        try:
            problem = ray.get(ref, timeout=90)
        except Exception as exc:  # a node that cannot run the task cannot run a job either
            problem = f"the probe task did not run there ({type(exc).__name__})"
        report.append(
            {
                "node_id": node["NodeID"],
                "ip": node.get("NodeManagerAddress"),
                "gpus": int(node.get("Resources", {}).get("GPU", 0)),
                "problem": problem,
            }
        )
    print(PREFIX, json.dumps({"nodes": report}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
