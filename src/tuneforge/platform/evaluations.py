"""Evaluations as a service: a model × dataset evaluation queued as an eval job, and its scores.

The evaluations API and eval-gated promotion (``rollouts.py``) both start theirs here.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from sqlalchemy import select

from tuneforge.errors import ConflictError, NotFoundError

from . import catalog, registry
from . import jobs as job_service
from .context import Platform
from .db import Evaluation, Job


def target(ctx: Platform, ref: str) -> tuple[str, str]:
    """(what `tuneforge eval` loads, the label) for a registered model or a base model in the store."""
    try:
        row = registry.resolve(ctx, ref)
        return row.path, f"{row.name}@{row.version}"
    except NotFoundError:
        pass
    from tuneforge.models.store import stored_model_dir

    if stored_model_dir(ref) is not None:
        return ref, ref
    raise NotFoundError(f"no registered or base model {ref!r}")


def create(
    ctx: Platform,
    model: str,
    dataset: str,
    compare_base: bool = False,
    max_samples: int | None = None,
    max_new_tokens: int = 64,
) -> tuple[Evaluation, Job]:
    path, label = target(ctx, model)
    ds = catalog.get_dataset_row(ctx.store, dataset)
    if ds.state != "ready":
        raise ConflictError(f"dataset {ds.id} is {ds.state}")
    spec = {
        "model": path,
        "label": label,
        "dataset": ds.id,
        "compare_base": compare_base,
        "max_samples": max_samples,
        "max_new_tokens": max_new_tokens,
    }
    job = job_service.create_job(ctx, spec, kind="eval")
    ev = Evaluation(
        id=f"eval-{secrets.token_hex(6)}",
        job_id=job.id,
        model=label,
        dataset=ds.id,
        compare_base=compare_base,
        created_at=time.time(),
    )
    with ctx.store.session() as s:
        s.add(ev)
    return ev, job


def reuse_or_create(
    ctx: Platform, model: str, dataset: str, max_samples: int | None, max_new_tokens: int
) -> Job:
    """An evaluation of ``model`` on ``dataset`` with these settings: a finished one when there is one and
    the model is a registered version (its files never change), else a new one (a stored base can be
    imported again under its name). A promotion tried again with another gate is decided at once."""
    _, label = target(ctx, model)
    ds = catalog.get_dataset_row(ctx.store, dataset)
    if "@" in label:
        with ctx.store.reading() as s:
            done = s.scalars(
                select(Job)
                .join(Evaluation, Evaluation.job_id == Job.id)
                .where(Evaluation.model == label, Evaluation.dataset == ds.id, Job.state == "succeeded")
                .order_by(Job.created_at.desc())
            ).all()
        for job in done:
            spec = job.spec or {}
            same = spec.get("max_samples") == max_samples and spec.get("max_new_tokens") == max_new_tokens
            if same and not spec.get("compare_base") and scores(job):
                return job
    return create(ctx, model, ds.id, False, max_samples, max_new_tokens)[1]


def scores(job: Job) -> dict | None:
    """{model label: {metric: value}} from a finished eval job's folder, or None before it wrote them."""
    path = Path(job.folder) / "eval" / "metrics.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("models")
