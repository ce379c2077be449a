"""/api/v1/models: the model store (list/get/pull/import/delete) and registered fine-tunes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from tuneforge.errors import ConflictError, NotFoundError
from tuneforge.models.store import remove_model

from .. import catalog, deployments, registry
from ..bodies import BoundedJsonRoute
from ..context import Platform
from ..db import Model
from ..deps import admin, platform
from ..schemas import ModelImport, ModelPull, ModelRegister

router = APIRouter(
    prefix="/api/v1/models", tags=["models"], dependencies=[Depends(admin)], route_class=BoundedJsonRoute
)


def model_dict(row: Model) -> dict:
    return {"name": row.name, "kind": row.kind, **row.info}


@router.get("")
def list_models(ctx: Platform = Depends(platform)) -> dict:
    catalog.sync_models(ctx.store)
    with ctx.store.reading() as s:
        base = [model_dict(r) for r in s.scalars(select(Model).order_by(Model.name))]
    return {"data": base, "registered": [registry.registered_dict(r) for r in registry.list_registered(ctx)]}


ASYNC_DOC = """

With ``"wait": false`` it answers **202** at once with a pull ``{id, name, state, stage, done, total,
error, model}``; poll ``GET /api/v1/models/pulls/{id}`` until ``state`` is ``succeeded`` (``model`` is
the record) or ``failed`` (``error`` says why). ``stage`` is download, extract, convert, hash, copy…;
``done``/``total`` count bytes or files (null when unknown). A second request for the same model while
one runs answers that one; more than a few at once answer 503."""

PULL_ANSWERS = {202: {"description": "Started (``wait: false``): the pull, to poll."}}


def _start_or_wait(ctx: Platform, args: list[str], key: tuple, name: str, wait: bool, response: Response):
    """``args`` end with the positional argument after ``--``: a name like ``--help`` stays a name."""
    pulls = ctx.pulls
    pull = pulls.start(key, name, args)  # one worker per model, a few at most, whether waited for or not
    if wait:
        return pulls.wait(pull)
    response.status_code = 202
    return pull.as_dict()


@router.post(
    "/pull",
    status_code=201,
    responses=PULL_ANSWERS,
    description="Fetch a base model into the store (instant when already there)." + ASYNC_DOC,
)
def pull_model(body: ModelPull, response: Response, ctx: Platform = Depends(platform)) -> dict:
    args = ["models", "pull", "--", body.name]
    return _start_or_wait(ctx, args, ("pull", body.name), body.name, body.wait, response)


@router.post(
    "/import",
    status_code=201,
    responses=PULL_ANSWERS,
    description="Import an HF folder or GGUF file that is on the server's disk." + ASYNC_DOC,
)
def import_model(body: ModelImport, response: Response, ctx: Platform = Depends(platform)) -> dict:
    args = ["models", "import"] + ([f"--name={body.name}"] if body.name else []) + ["--", body.path]
    key = ("import", body.path, body.name)
    return _start_or_wait(ctx, args, key, body.name or body.path, body.wait, response)


@router.get("/pulls")
def list_pulls(ctx: Platform = Depends(platform)) -> dict:
    """The pulls and imports since the server started (waited for or not), newest first."""
    return {"data": ctx.pulls.list()}


@router.get("/pulls/{pull_id}")
def get_pull(pull_id: str, ctx: Platform = Depends(platform)) -> dict:
    """One pull: its state, stage and progress (``done`` of ``total``)."""
    return ctx.pulls.get(pull_id)


@router.post("/register", status_code=201)
def register_model(body: ModelRegister, ctx: Platform = Depends(platform)) -> dict:
    """A training job's final output or checkpoint; or any folder of a job (``path``, e.g. a command
    job's output/checkpoint-3000) with its ``base``: it must be an HF model or a peft adapter on it."""
    row = registry.register(ctx, body.job, body.checkpoint, body.name, body.path, body.base)
    return registry.registered_dict(row)


@router.get("/registered")
def list_registered(ctx: Platform = Depends(platform)) -> dict:
    """Every registered version (``name@version`` with its lineage), by name then version."""
    return {"data": [registry.registered_dict(r) for r in registry.list_registered(ctx)]}


@router.get("/registered/{ref}")
def get_registered(ref: str, ctx: Platform = Depends(platform)) -> dict:
    return registry.registered_dict(registry.resolve(ctx, ref))


@router.delete("/registered/{ref}")
def delete_registered(ref: str, ctx: Platform = Depends(platform)) -> dict:
    deployment = deployments.in_use(ctx, ref)
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
    job = deployments.model_in_use(ctx, name)
    if job:
        what = job if job.startswith("deployment ") else f"job {job}"
        raise ConflictError(f"model {name} is used by {what}; stop/cancel and remove it first")
    remove_model(name)
    catalog.sync_models(ctx.store)
    return {"name": name, "deleted": True}
