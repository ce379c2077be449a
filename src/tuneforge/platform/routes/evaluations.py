"""/api/v1/evaluations: a model × dataset evaluation run as a worker job; its metrics and predictions."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from tuneforge.errors import NotFoundError
from tuneforge.jobs import folder as fmt

from .. import evaluations as service
from .. import paging
from ..bodies import BoundedJsonRoute
from ..context import Platform
from ..db import Evaluation, Job
from ..deps import admin, platform
from ..paging import BEFORE_DOC, MAX_CURSOR
from ..schemas import EvaluationCreate

router = APIRouter(
    prefix="/api/v1/evaluations",
    tags=["evaluations"],
    dependencies=[Depends(admin)],
    route_class=BoundedJsonRoute,
)


def evaluation_dict(ctx: Platform, ev: Evaluation, job: Job) -> dict:
    return {
        "id": ev.id,
        "model": ev.model,
        "dataset": ev.dataset,
        "compare_base": ev.compare_base,
        "job": job.id,
        "state": job.state,
        "created_at": ev.created_at,
        "error": job.error,
        "metrics": service.scores(job),
    }


@router.post("", status_code=201)
def create_evaluation(body: EvaluationCreate, ctx: Platform = Depends(platform)) -> dict:
    ev, job = service.create(
        ctx, body.model, body.dataset, body.compare_base, body.max_samples, body.max_new_tokens
    )
    return evaluation_dict(ctx, ev, job)


def _get(ctx: Platform, eval_id: str) -> tuple[Evaluation, Job]:
    with ctx.store.reading() as s:
        ev = s.get(Evaluation, eval_id)
        job = s.get(Job, ev.job_id) if ev else None
    if ev is None or job is None:
        raise NotFoundError(f"no evaluation {eval_id!r}")
    return ev, job


@router.get("")
def list_evaluations(
    ctx: Platform = Depends(platform),
    limit: int = Query(50, ge=1, le=500),
    before: str | None = Query(None, max_length=MAX_CURSOR, description=BEFORE_DOC),
) -> dict:
    """Newest first, a page at a time: follow ``next`` (as ``before=``) until it is null."""
    query = select(Evaluation, Job).join(Job, Job.id == Evaluation.job_id)
    with ctx.store.reading() as s:
        rows = list(s.execute(paging.newest_first(query, Evaluation, limit, before)).all())
    rows, nxt = paging.page(rows, limit, anchor=lambda row: row[0])
    return {"data": [evaluation_dict(ctx, ev, job) for ev, job in rows], "next": nxt}


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
