"""/api/v1/datasets: upload (multipart files, a zip, or a JSON body), list, get, preview, files, delete."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from tuneforge.data.store import read_stored_records
from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.jobs.folder import list_files, safe_path
from tuneforge.serve.body import loads_object, read_body

from .. import catalog, paging
from ..bodies import BoundedJsonRoute, read_form, save_part
from ..context import Platform
from ..db import Dataset
from ..deps import admin, platform
from ..paging import BEFORE_DOC, MAX_CURSOR

router = APIRouter(
    prefix="/api/v1/datasets", tags=["datasets"], dependencies=[Depends(admin)], route_class=BoundedJsonRoute
)
JSON_LIMIT = 64 << 20  # a JSON body is parsed whole: big datasets come as files

UPLOAD_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "name": {"type": "string"},
                        "format": {"type": "string"},
                        "map": {"type": "string", "description": "prompt=COL,response=COL"},
                    },
                    "required": ["files"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "format": {"type": "string"},
                        "map": {
                            "anyOf": [
                                {"type": "object", "additionalProperties": {"type": "string"}},
                                {"type": "string", "description": "prompt=COL,response=COL"},
                            ]
                        },
                        "records": {"type": "array", "items": {"type": "object"}},
                    },
                    "required": ["records"],
                }
            },
        },
        "required": True,
    }
}


async def _receive_multipart(request: Request, upload: catalog.Upload, limit: int) -> dict:
    # Starlette spools each part to a temporary file past 1 MiB; we copy it in chunks, counting.
    form = await read_form(request, limit, max_files=1000, max_fields=100)
    fields: dict = {}
    index = 0
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an UploadFile
            index += 1
            target = upload.dir / catalog.safe_filename(value.filename, index)
            while target.exists():
                target = target.with_name(f"{index}-{target.name}")
            upload.bytes = await save_part(value, target, limit, upload.bytes)
            upload.files.append(target)
        elif key in ("name", "format", "map"):
            fields[key] = str(value)[:10_000] or None
    await form.close()
    return fields


class JsonUpload(BaseModel):
    """The JSON form of an upload (the ``application/json`` schema of UPLOAD_DOC)."""

    name: str | None = None
    format: str | None = None
    map: dict[str, str] | str | None = None  # {"prompt": COL, …} or "prompt=COL,…" as in a form
    records: list[Any]  # each record is judged by the data package, with its number


async def _receive_json(request: Request, upload: catalog.Upload, limit: int) -> dict:
    raw = await read_body(request.stream(), request.headers.get("content-length"), limit)
    try:
        body = JsonUpload.model_validate(loads_object(raw))
    except ValidationError as exc:  # the same 422 as a route's own body model
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    target = upload.dir / f"{catalog.safe_filename(body.name, 0).removesuffix('.jsonl')}.jsonl"
    with open(target, "w", encoding="utf-8") as fh:
        for record in body.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    upload.files.append(target)
    upload.bytes = len(raw)
    return {"name": body.name, "format": body.format, "map": body.map}


@router.post("", status_code=201, openapi_extra=UPLOAD_DOC)
async def upload_dataset(request: Request, ctx: Platform = Depends(platform)):
    """Validated with the data package; invalid → 422 with every problem and nothing stored."""
    from starlette.concurrency import run_in_threadpool

    limit = ctx.max_upload_bytes
    upload = catalog.Upload(ctx.settings.datasets_dir)
    background = False
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            fields = await _receive_multipart(request, upload, limit)
        else:
            fields = await _receive_json(request, upload, min(limit, JSON_LIMIT))
        if not upload.files:
            raise ConfigError("no files in the upload: send them as multipart field 'files'")
        mapping = catalog.check_options(fields.get("format"), fields.get("map"), fields.get("name"))
        args = (ctx.store, upload, fields.get("name"), fields.get("format"), mapping, limit)
        token_stats = ctx.token_stats

        def on_ready(ds_id: str) -> None:
            if token_stats:
                catalog.token_report_in_background(ctx, ds_id)

        if upload.bytes > ctx.background_validation_bytes:
            background = True
            row = catalog.ingest_in_background(*args, on_ready=on_ready)
            return JSONResponse(catalog.dataset_dict(row), status_code=202)
        row = await run_in_threadpool(catalog.ingest, *args)
        on_ready(row.id)
        return catalog.dataset_dict(row)
    finally:
        if not background:
            upload.close()


@router.get("")
def list_datasets(
    ctx: Platform = Depends(platform),
    state: str | None = None,
    limit: int = Query(500, ge=1, le=500),
    before: str | None = Query(None, max_length=MAX_CURSOR, description=BEFORE_DOC),
) -> dict:
    """Newest first, a page at a time: follow ``next`` (as ``before=``) until it is null."""
    catalog.sync_datasets(ctx.store)
    q = select(Dataset).where(Dataset.state != "moved")
    if state:
        q = q.where(Dataset.state == state)
    with ctx.store.reading() as s:
        rows, nxt = paging.page(list(s.scalars(paging.newest_first(q, Dataset, limit, before))), limit)
        return {"data": [catalog.dataset_dict(r) for r in rows], "next": nxt}


def _row(ctx: Platform, ref: str) -> Dataset:
    row = catalog.get_dataset_row(ctx.store, ref)
    if row.state == "moved":
        row = catalog.get_dataset_row(ctx.store, row.meta["moved_to"])
    return row


@router.get("/{ref}")
def get_dataset(ref: str, ctx: Platform = Depends(platform)) -> dict:
    return catalog.dataset_dict(_row(ctx, ref))


@router.get("/{ref}/preview")
def preview_dataset(ref: str, ctx: Platform = Depends(platform), n: int = Query(5, ge=1, le=100)) -> dict:
    """The first canonical records (what training reads after format conversion) and, once the token
    report is in, the first records as the model sees them: pieces of text, trained on or not."""
    row = _row(ctx, ref)
    folder = catalog.dataset_folder(row)
    masked = (row.meta or {}).get("masked_preview")
    return {"data": read_stored_records(folder)[:n], "masked": masked}


@router.get("/{ref}/files")
def dataset_files(ref: str, ctx: Platform = Depends(platform)) -> dict:
    folder = catalog.dataset_folder(_row(ctx, ref)) / "files"
    return {"data": list_files(folder)}


@router.get("/{ref}/files/{path:path}")
def download_dataset_file(ref: str, path: str, ctx: Platform = Depends(platform)):
    folder = catalog.dataset_folder(_row(ctx, ref)) / "files"
    target = safe_path(folder, path)
    if target is None or not target.is_file():
        raise NotFoundError(f"no file {path!r} in dataset {ref}")
    return FileResponse(target, filename=target.name)


@router.delete("/{ref}")
def delete_dataset(ref: str, ctx: Platform = Depends(platform)) -> dict:
    return {"id": catalog.delete_dataset(ctx.store, ref), "deleted": True}
