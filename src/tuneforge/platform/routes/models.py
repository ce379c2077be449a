"""/api/v1/models: the model store (list/get/pull/import/delete) and registered fine-tunes."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends
from sqlalchemy import select

from tuneforge.errors import ConflictError, NotFoundError
from tuneforge.models.store import remove_model

from .. import catalog, registry
from ..context import Platform
from ..db import Model
from ..deps import admin, platform
from ..schemas import ModelImport, ModelPull, ModelRegister

router = APIRouter(prefix="/api/v1/models", tags=["models"], dependencies=[Depends(admin)])


def model_dict(row: Model) -> dict:
    return {"name": row.name, "kind": row.kind, **row.info}


@router.get("")
def list_models(ctx: Platform = Depends(platform)) -> dict:
    catalog.sync_models(ctx.store)
    with ctx.store.reading() as s:
        base = [model_dict(r) for r in s.scalars(select(Model).order_by(Model.name))]
    return {"data": base, "registered": [registry.registered_dict(r) for r in registry.list_registered(ctx)]}


def _worker(ctx: Platform, *args: str) -> dict:
    """Pull and import load weights with torch: they run as a worker process, never in the server."""
    import json
    import subprocess

    from tuneforge.errors import ConfigError, ResourceError

    from ..jobs import WORKER

    env = {**os.environ, "TUNEFORGE_HOME": str(ctx.home)}
    proc = subprocess.run([*WORKER, *args, "--json"], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["the worker failed"])[-1]
        error = ConfigError if proc.returncode == 2 else ResourceError
        raise error(last.removeprefix("error: "))
    return json.loads(proc.stdout)


@router.post("/pull", status_code=201)
def pull_model(body: ModelPull, ctx: Platform = Depends(platform)) -> dict:
    """Fetch a base model into the store (instant when already there)."""
    info = _worker(ctx, "models", "pull", body.name)
    catalog.sync_models(ctx.store)
    return info


@router.post("/import", status_code=201)
def import_model(body: ModelImport, ctx: Platform = Depends(platform)) -> dict:
    """Import an HF folder or GGUF file that is on the server's disk."""
    args = ["models", "import", body.path] + (["--name", body.name] if body.name else [])
    info = _worker(ctx, *args)
    catalog.sync_models(ctx.store)
    return info


@router.post("/register", status_code=201)
def register_model(body: ModelRegister, ctx: Platform = Depends(platform)) -> dict:
    """A training job's final output or checkpoint; or any folder of a job (``path``, e.g. a command
    job's output/checkpoint-3000) with its ``base``: it must be an HF model or a peft adapter on it."""
    row = registry.register(ctx, body.job, body.checkpoint, body.name, body.path, body.base)
    return registry.registered_dict(row)


@router.get("/registered/{ref}")
def get_registered(ref: str, ctx: Platform = Depends(platform)) -> dict:
    return registry.registered_dict(registry.resolve(ctx, ref))


@router.delete("/registered/{ref}")
def delete_registered(ref: str, ctx: Platform = Depends(platform)) -> dict:
    from ..deployments import in_use

    deployment = in_use(ctx, ref)
    if deployment:
        raise ConflictError(f"registered model {ref} is served by deployment {deployment}; rm it first")
    return {"ref": registry.delete_registered(ctx, ref), "deleted": True}


@router.get("/{name}")
def get_model(name: str, ctx: Platform = Depends(platform)) -> dict:
    catalog.sync_models(ctx.store)
    with ctx.store.reading() as s:
        row = s.get(Model, name)
    if row is None:
        raise NotFoundError(f"no model {name!r}")
    return model_dict(row)


@router.delete("/{name}")
def delete_model(name: str, ctx: Platform = Depends(platform)) -> dict:
    job = registry.model_in_use(ctx, name)
    if job:
        what = job if job.startswith("deployment ") else f"job {job}"
        raise ConflictError(f"model {name} is used by {what}; stop/cancel and remove it first")
    remove_model(name)
    catalog.sync_models(ctx.store)
    return {"name": name, "deleted": True}
