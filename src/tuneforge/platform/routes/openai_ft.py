"""The OpenAI fine-tuning API, self-hosted: /v1/files and /v1/fine_tuning/jobs.

Scripts written for the hosted service work by changing ``base_url`` and the key. The routes parse and
answer; ``platform/openai_ft.py`` does the work.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import ConfigError

from .. import catalog, openai_ft
from ..bodies import BoundedJsonRoute, multipart_doc, read_form, save_part
from ..deps import PlatformDep, admin
from ..schemas import (
    FineTuneCreate,
    FineTuningCheckpointList,
    FineTuningEventList,
    FineTuningJob,
    FineTuningJobList,
    OpenAIFile,
    OpenAIFileDeleted,
    OpenAIFileList,
)

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(admin)], route_class=BoundedJsonRoute)

FILE_UPLOAD_DOC = multipart_doc(
    {"file": {"type": "string", "format": "binary"}, "purpose": {"type": "string", "enum": ["fine-tune"]}},
    ["file", "purpose"],
)


@router.post("/files", response_model=OpenAIFile, openapi_extra=FILE_UPLOAD_DOC)
async def create_file(request: Request, ctx: PlatformDep) -> dict:
    limit = ctx.max_upload_bytes
    upload = catalog.Upload(ctx.settings.datasets_dir)
    try:
        form = await read_form(request, limit, max_files=1, max_fields=10)
        purpose = str(form.get("purpose") or "")
        if purpose != "fine-tune":
            raise ConfigError(f"purpose {purpose!r}: this server takes files with purpose 'fine-tune'")
        part = form.get("file")
        if part is None or not hasattr(part, "read"):
            raise ConfigError("no file: send it as multipart field 'file'")
        name = catalog.safe_filename(part.filename, 1)
        target = upload.dir / (name if name.endswith(".jsonl") else name + ".jsonl")
        upload.bytes = await save_part(part, target, limit, upload.bytes, "file")
        await form.close()
        upload.files.append(target)
        return await run_in_threadpool(openai_ft.store_file, ctx, upload, part.filename or name, purpose)
    finally:
        upload.close()


@router.get("/files", response_model=OpenAIFileList)
def list_files(ctx: PlatformDep, purpose: str | None = None) -> dict:
    return openai_ft.list_files(ctx, purpose)


@router.get("/files/{file_id}", response_model=OpenAIFile)
def retrieve_file(file_id: str, ctx: PlatformDep) -> dict:
    return openai_ft.file_dict(openai_ft.get_file(ctx, file_id))


@router.delete("/files/{file_id}", response_model=OpenAIFileDeleted)
def delete_file(file_id: str, ctx: PlatformDep) -> dict:
    return openai_ft.delete_file(ctx, file_id)


@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
def create_fine_tuning_job(body: FineTuneCreate, ctx: PlatformDep) -> dict:
    return openai_ft.create_job(ctx, body)


@router.get("/fine_tuning/jobs", response_model=FineTuningJobList)
def list_fine_tuning_jobs(
    ctx: PlatformDep, after: str | None = None, limit: int = Query(20, ge=1, le=100)
) -> dict:
    return openai_ft.list_jobs(ctx, after, limit)


@router.get("/fine_tuning/jobs/{ftjob}", response_model=FineTuningJob)
def retrieve_fine_tuning_job(ftjob: str, ctx: PlatformDep) -> dict:
    return openai_ft.ft_dict(openai_ft.get_job(ctx, ftjob))


@router.post("/fine_tuning/jobs/{ftjob}/cancel", response_model=FineTuningJob)
def cancel_fine_tuning_job(ftjob: str, ctx: PlatformDep) -> dict:
    return openai_ft.cancel_job(ctx, ftjob)


@router.get("/fine_tuning/jobs/{ftjob}/events", response_model=FineTuningEventList)
def list_fine_tuning_events(
    ftjob: str, ctx: PlatformDep, after: str | None = None, limit: int = Query(20, ge=1, le=1000)
) -> dict:
    return openai_ft.list_events(ctx, ftjob, after, limit)


@router.get("/fine_tuning/jobs/{ftjob}/checkpoints", response_model=FineTuningCheckpointList)
def list_fine_tuning_checkpoints(
    ftjob: str, ctx: PlatformDep, after: str | None = None, limit: int = Query(10, ge=1, le=100)
) -> dict:
    return openai_ft.list_checkpoints(ctx, ftjob, after, limit)
