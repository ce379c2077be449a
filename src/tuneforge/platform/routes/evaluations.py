"""/api/v1/evaluations: a model × dataset evaluation run as a worker job; its metrics and predictions."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from tuneforge.errors import NotFoundError
from tuneforge.jobs import folder as fmt

from .. import catalog, registry
from .. import jobs as service
from ..bodies import BoundedJsonRoute
from ..context import Platform
from ..db import Evaluation, Job
from ..deps import admin, platform
from ..schemas import EvaluationCreate

router = APIRouter(
    prefix="/api/v1/evaluations",
    tags=["evaluations"],
    dependencies=[Depends(admin)],
    route_class=BoundedJsonRoute,
)


def _target(ctx: Platform, ref: str) -> tuple[str, str]:
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


def evaluation_dict(ctx: Platform, ev: Evaluation, job: Job) -> dict:
    out = {
        "id": ev.id,
        "model": ev.model,
        "dataset": ev.dataset,
        "compare_base": ev.compare_base,
        "job": job.id,
        "state": job.state,
        "created_at": ev.created_at,
        "error": job.error,
        "metrics": None,
    }
    metrics = Path(job.folder) / "eval" / "metrics.json"
    if metrics.exists():
        out["metrics"] = json.loads(metrics.read_text()).get("models")
    return out


@router.post("", status_code=201)
def create_evaluation(body: EvaluationCreate, ctx: Platform = Depends(platform)) -> dict:
    target, label = _target(ctx, body.model)
    ds = catalog.get_dataset_row(ctx.store, body.dataset)
    if ds.state != "ready":
        from tuneforge.errors import ConflictError

        raise ConflictError(f"dataset {ds.id} is {ds.state}")
    spec = {
        "model": target,
        "label": label,
        "dataset": ds.id,
        "compare_base": body.compare_base,
        "max_samples": body.max_samples,
        "max_new_tokens": body.max_new_tokens,
    }
    job = service.create_job(ctx, spec, kind="eval")
    ev = Evaluation(
        id=f"eval-{secrets.token_hex(6)}",
        job_id=job.id,
        model=label,
        dataset=ds.id,
        compare_base=body.compare_base,
        created_at=time.time(),
    )
    with ctx.store.session() as s:
        s.add(ev)
    return evaluation_dict(ctx, ev, job)


def _get(ctx: Platform, eval_id: str) -> tuple[Evaluation, Job]:
    with ctx.store.reading() as s:
        ev = s.get(Evaluation, eval_id)
        job = s.get(Job, ev.job_id) if ev else None
    if ev is None or job is None:
        raise NotFoundError(f"no evaluation {eval_id!r}")
    return ev, job


@router.get("")
def list_evaluations(ctx: Platform = Depends(platform), limit: int = Query(50, ge=1, le=500)) -> dict:
    with ctx.store.reading() as s:
        rows = list(
            s.execute(
                select(Evaluation, Job)
                .join(Job, Job.id == Evaluation.job_id)
                .order_by(Evaluation.created_at.desc())
                .limit(limit)
            ).all()
        )
    return {"data": [evaluation_dict(ctx, ev, job) for ev, job in rows]}


@router.get("/{eval_id}")
def get_evaluation(eval_id: str, ctx: Platform = Depends(platform)) -> dict:
    return evaluation_dict(ctx, *_get(ctx, eval_id))


@router.get("/{eval_id}/predictions")
def evaluation_predictions(
    eval_id: str,
    ctx: Platform = Depends(platform),
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=5000),
) -> dict:
    _, job = _get(ctx, eval_id)
    items, nxt = fmt.read_jsonl(Path(job.folder) / "eval" / "predictions.jsonl", offset, limit)
    return {"data": items, "next_offset": nxt}
