"""Job queues (``TUNEFORGE_QUEUES``): a name a job waits under, with a CPU/GPU quota for its running jobs.

A job names its queue in its spec (``resources.queue`` of a training spec, ``queue`` of a command job),
so the row needs no column of its own. The supervisor starts a queued job only while its queue's
running jobs and this one fit the quota; inside a queue the order is the supervisor's (priority, then
age), and a job held by its quota holds the later jobs of its queue, not those of other queues.
"""

from __future__ import annotations

from tuneforge.settings import Settings, env_name

from .db import Job


def job_queue(row: Job) -> str | None:
    spec = row.spec or {}
    if row.kind == "train":
        return (spec.get("resources") or {}).get("queue")
    return spec.get("queue")


def job_workers(row: Job) -> int:
    """The job's processes (ranks): what it counts against a queue's ``cpus``."""
    spec = row.spec or {}
    if row.kind == "train":
        r = spec.get("resources") or {}
        return max(int(r.get("workers") or 1), int(r.get("gpus") or 0))
    return int(spec.get("workers") or 1)


def queue_problem(settings: Settings, name: str | None, workers: int, gpus: int) -> str | None:
    """Why a job of ``workers`` processes and ``gpus`` GPUs cannot wait in queue ``name`` on this server
    (None when it can): an unknown queue, or a quota the job alone passes (it would wait for ever)."""
    if name is None:
        return None
    quota = settings.queues.get(name)
    if quota is None:
        known = ", ".join(sorted(settings.queues)) or f"none are configured ({env_name('queues')})"
        return f"no queue {name!r} on this server; queues: {known}"
    if quota.cpus is not None and workers > quota.cpus:
        return f"asks {workers} workers; queue {name!r} allows {quota.cpus} at a time"
    if quota.gpus is not None and gpus > quota.gpus:
        return f"asks {gpus} GPUs; queue {name!r} allows {quota.gpus} at a time"
    return None


def fits(settings: Settings, row: Job, running: list[Job]) -> bool:
    """Whether ``row`` may start next to the ``running`` jobs without passing its queue's quota."""
    name = job_queue(row)
    quota = settings.queues.get(name) if name else None
    if quota is None:
        return True
    mine = [r for r in running if job_queue(r) == name]
    if quota.cpus is not None and sum(map(job_workers, mine)) + job_workers(row) > quota.cpus:
        return False
    return quota.gpus is None or sum(r.gpus for r in mine) + row.gpus <= quota.gpus
