"""/api/v1/models/{name}/exports: export a registered fine-tune (or a stored model) as GGUF or merged."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from ..bodies import BoundedJsonRoute
from ..context import Platform
from ..deps import admin, platform
from ..exports import ExportRequest

router = APIRouter(
    prefix="/api/v1/models", tags=["models"], dependencies=[Depends(admin)], route_class=BoundedJsonRoute
)


@router.post("/{name}/exports", status_code=202)
def create_export(name: str, body: ExportRequest, ctx: Platform = Depends(platform)) -> dict:
    """Start an export of a registered model (``version``: default the latest) or a stored model.

    Answers **202** with the export ``{id, state, stage, done, total, error, files, registered}``; poll
    ``GET …/exports/{id}`` until ``state`` is ``succeeded`` (``files`` lists what to download) or
    ``failed``. One export per model at a time (409), a few per server (503)."""
    return ctx.exports.start(name, body).as_dict()


@router.get("/{name}/exports")
def list_exports(name: str, ctx: Platform = Depends(platform)) -> dict:
    """This model's exports since the server started, newest first."""
    return {"data": ctx.exports.list(name)}


@router.get("/{name}/exports/{export_id}")
def get_export(name: str, export_id: str, ctx: Platform = Depends(platform)) -> dict:
    return ctx.exports.get(name, export_id).as_dict()


@router.get("/{name}/exports/{export_id}/download")
def download_export(name: str, export_id: str, file: str | None = None, ctx: Platform = Depends(platform)):
    """A file of a finished export: ``?file=Modelfile`` (a path from ``files``); the GGUF file by default."""
    target = ctx.exports.file(name, export_id, file)
    return FileResponse(target, filename=target.name)
