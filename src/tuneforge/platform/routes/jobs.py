"""/api/v1/jobs: create, list, get, cancel, resume, retry, delete; logs, events, metrics (cursor-paginated,
followable as Server-Sent Events), checkpoints, files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from tuneforge.errors import NotFoundError
from tuneforge.jobs import folder as fmt

from .. import commands, job_answers, queues, registry
from .. import jobs as service
from ..bodies import BoundedJsonRoute, multipart_doc, read_form, save_part
from ..context import Platform
from ..deps import admin, platform
from ..paging import BEFORE_DOC, MAX_CURSOR
from ..read_threads import in_read_thread
from ..schemas import AnyJobCreate, CommandJobCreate, JobDeleted, JobList, JobOut, ResumeBody

router = APIRouter(
    prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(admin)], route_class=BoundedJsonRoute
)
FOLLOW_POLL_S = 0.5
# ``follow=true`` answers Server-Sent Events; the log without it is text
SSE = {"text/event-stream": {"schema": {"description": "events: `event: NAME`, `data: JSON`"}}}
FOLLOWED = {200: {"description": "A page, or (follow=true) the stream.", "content": SSE}}
LOG_ANSWERS = {
    200: {
        "description": "The log from the offset, or (follow=true) the stream.",
        "content": {"text/plain": {"schema": {"type": "string"}}, **SSE},
    }
}


CODE_UPLOAD_DOC = multipart_doc({"file": {"type": "string", "format": "binary"}}, ["file"])


@router.post("/code", status_code=201, openapi_extra=CODE_UPLOAD_DOC)
async def upload_code(request: Request, ctx: Platform = Depends(platform)):
    """A zip of a command job's working directory; checked like a dataset zip; kept by its content."""
    import shutil
    import tempfile

    from starlette.concurrency import run_in_threadpool

    from tuneforge.errors import ConfigError

    commands.require_enabled(ctx)
    limit = ctx.max_upload_bytes
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ConfigError("send the code as multipart/form-data with one part named 'file' (a .zip)")
    ctx.home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".code-upload-", dir=ctx.home))
    try:
        form = await read_form(request, limit, max_files=1, max_fields=10)
        part = form.get("file")
        if part is None or not hasattr(part, "read"):
            raise ConfigError("no part named 'file' in the upload: send the .zip as field 'file'")
        target = tmp / "code.zip"
        await save_part(part, target, limit)
        await form.close()
        return await run_in_threadpool(commands.store_code, ctx, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@router.post("", status_code=201, response_model=JobOut)
def create_job(body: AnyJobCreate, ctx: Platform = Depends(platform)) -> dict:
    """Validated before queueing: a bad spec, an unknown dataset/model or too many GPUs → 422.

    ``kind: command`` runs your own command (see CommandJobCreate); it needs an admin token and a server
    that allows command jobs (TUNEFORGE_ALLOW_COMMAND_JOBS)."""
    if isinstance(body, CommandJobCreate):
        return service.job_dict(service.submit_command(ctx, body))
    data = service.build_spec(
        body.spec,
        body.template,
        body.model,
        body.datasets,
        body.validation_dataset,
        body.overrides,
        body.resources,
    )
    spec = service.validate_spec(ctx, data)
    row = service.create_job(
        ctx, spec, priority=body.priority, restart_policy=body.restart_policy, max_retries=body.max_retries
    )
    return service.job_dict(row)


# The two reads every console and script polls are ``async def`` with their database work in one worker
# thread (read_threads): a plain ``def`` route costs FastAPI two thread hops (the route, then the
# answer's validation), in a pool of 40 threads that contend for the interpreter lock.


@router.get("", response_model=JobList)
async def list_jobs(
    ctx: Platform = Depends(platform),
    state: str | None = Query(None, pattern="^(queued|running|succeeded|failed|cancelled)$"),
    kind: str | None = Query(None, pattern="^(train|eval|command)$"),
    limit: int = Query(50, ge=1, le=500),
    before: str | None = Query(None, max_length=MAX_CURSOR, description=BEFORE_DOC),
) -> Response:
    """Newest first, a page at a time: follow ``next`` (as ``before=``) until it is null."""
    # the JSON response_model describes, written by job_answers (each row's encoded once per version)
    page = await in_read_thread(lambda: job_answers.job_page(ctx, state, limit, before, kind))
    return Response(page, media_type="application/json")


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, ctx: Platform = Depends(platform)) -> Response:
    job = await in_read_thread(lambda: job_answers.job_answer(ctx, job_id))
    return Response(job, media_type="application/json")


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, ctx: Platform = Depends(platform)) -> dict:
    return service.job_dict(service.cancel_job(ctx, job_id))


@router.post("/{job_id}/resume", response_model=JobOut)
def resume_job(job_id: str, body: ResumeBody | None = None, ctx: Platform = Depends(platform)) -> dict:
    return service.job_dict(service.resume_job(ctx, job_id, body.checkpoint if body else None))


@router.post("/{job_id}/retry", status_code=201, response_model=JobOut)
def retry_job(job_id: str, ctx: Platform = Depends(platform)) -> dict:
    return service.job_dict(service.retry_job(ctx, job_id))


@router.delete("/{job_id}", response_model=JobDeleted)
def delete_job(job_id: str, ctx: Platform = Depends(platform)) -> dict:
    from tuneforge.errors import ConflictError

    names = registry.job_is_registered(ctx, job_id)
    if names:
        raise ConflictError(f"job {job_id} is registered as {', '.join(names)}; delete those first")
    service.delete_job(ctx, job_id)
    return {"id": job_id, "deleted": True}


# -- the job folder -------------------------------------------------------------------------------------


def _sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def _ended(ctx: Platform, job_id: str) -> bool:
    return service.get_job(ctx, job_id).state in service.TERMINAL


def _follow(request: Request, ctx: Platform, job_id: str, read, offset: int, event: str):
    """SSE: ``read(offset) -> (items, next_offset)`` until the job ends and nothing is left to read."""

    async def stream():
        nonlocal offset
        while True:
            ended = await asyncio.to_thread(_ended, ctx, job_id)  # checked before the read: no lost tail
            items, offset = await asyncio.to_thread(read, offset)
            if items:
                yield _sse(event, {"data": items, "next_offset": offset})
            if ended and not items:
                yield _sse("end", {"state": service.get_job(ctx, job_id).state, "next_offset": offset})
                return
            if await request.is_disconnected():
                return
            if not items:
                await asyncio.sleep(FOLLOW_POLL_S)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/{job_id}/logs", responses=LOG_ANSWERS)
def job_logs(
    job_id: str,
    request: Request,
    ctx: Platform = Depends(platform),
    offset: int = Query(0, ge=0),
    limit: int = Query(1 << 20, ge=1, le=8 << 20),
    follow: bool = False,
    rank: int | None = Query(
        None, ge=0, description="One rank's own log (logs/rank-N.txt) of a job with several workers."
    ),
):
    """The worker's output from a byte offset (header X-Next-Offset), or followed as SSE."""
    job = service.get_job(ctx, job_id)
    root = Path(job.folder)
    if rank is not None and rank >= (workers := queues.job_workers(job)):
        raise NotFoundError(f"job {job_id} has {workers} rank(s), 0…{workers - 1}; no rank {rank}")
    # Rank logs exist only when a job runs several processes; a one-worker job's rank 0 is its log.
    own_log = rank is not None and workers > 1

    def read(at: int):
        if own_log:
            data, nxt = fmt.read_bytes(fmt.rank_log(root, rank), at, limit)
        else:
            data, nxt = ctx.executor.logs(root, at, limit)
        return (data.decode("utf-8", errors="replace") if data else ""), nxt

    if follow:
        return _follow(request, ctx, job_id, read, offset, "log")
    text, nxt = read(offset)
    return Response(text, media_type="text/plain; charset=utf-8", headers={"X-Next-Offset": str(nxt)})


def _jsonl_route(name: str, filename: str):
    def route(
        job_id: str,
        request: Request,
        ctx: Platform = Depends(platform),
        offset: int = Query(0, ge=0, description="The `next_offset` of the previous page."),
        limit: int = Query(500, ge=1, le=10_000),
        follow: bool = False,
    ):
        path = Path(service.get_job(ctx, job_id).folder) / filename

        def read(at: int):
            return fmt.read_jsonl(path, at, limit)

        if follow:
            return _follow(request, ctx, job_id, read, offset, name)
        items, nxt = read(offset)
        return {"data": items, "next_offset": nxt}

    route.__name__ = f"job_{name}"
    route.__doc__ = f"The job's {name} from a cursor, or followed as SSE."
    return route


router.get("/{job_id}/events", responses=FOLLOWED)(_jsonl_route("events", fmt.EVENTS_FILE))
router.get("/{job_id}/metrics", responses=FOLLOWED)(_jsonl_route("metrics", fmt.METRICS_FILE))


@router.get("/{job_id}/checkpoints")
def job_checkpoints(job_id: str, ctx: Platform = Depends(platform)) -> dict:
    return {"data": fmt.checkpoints_with_metrics(Path(service.get_job(ctx, job_id).folder))}


@router.get("/{job_id}/files")
def job_files(job_id: str, ctx: Platform = Depends(platform)) -> dict:
    return {"data": fmt.list_files(Path(service.get_job(ctx, job_id).folder))}


@router.get("/{job_id}/files/{path:path}")
def download_job_file(job_id: str, path: str, ctx: Platform = Depends(platform)):
    target = fmt.safe_path(Path(service.get_job(ctx, job_id).folder), path)
    if target is None or not target.is_file():
        raise NotFoundError(f"no file {path!r} in job {job_id}")
    return FileResponse(target, filename=target.name)
