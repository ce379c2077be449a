"""/api/v1/deployments (admin): create, list, show, scale, stop, start, delete, events, worker logs,
and eval-gated promotion (promote, confirm, rollback: rollouts.py)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from tuneforge.jobs import folder as fmt

from .. import deployments as service
from .. import rollouts
from ..bodies import BoundedJsonRoute
from ..context import Platform
from ..deps import admin, platform
from ..schemas import Body

router = APIRouter(
    prefix="/api/v1/deployments",
    tags=["deployments"],
    dependencies=[Depends(admin)],
    route_class=BoundedJsonRoute,
)


class DeploymentCreate(Body):
    model: str = Field(
        ...,
        max_length=500,
        description="A stored base model, a registered model (name, name@N, name:vN) or ft:…",
    )
    name: str | None = Field(
        default=None, max_length=63, description="Lowercase [a-z0-9-]; derived when left out."
    )
    adapters: dict[str, str] | None = Field(
        default=None,
        max_length=32,
        description="Extra LoRA adapters on the same base: {alias: registered model}.",
    )
    engine: Literal["auto", "transformers", "vllm"] = "auto"
    replicas: int = Field(default=1, ge=1, le=16, description="Worker processes (round robin).")
    max_batch_size: int | None = Field(default=None, ge=1, le=1024)
    max_model_len: int | None = Field(default=None, ge=16, le=1 << 20)


class DeploymentUpdate(Body):
    replicas: int = Field(..., ge=1, le=16, description="Worker processes: more start, the extra stop.")


class DeploymentPromote(Body):
    model: str = Field(..., max_length=500, description="The candidate: a registered model (name@N), a base.")
    dataset: str = Field(..., max_length=200, description="A ready chat dataset to evaluate both models on.")
    canary_percent: float = Field(
        default=10, gt=0, le=100, description="The share of the deployment's traffic the candidate takes."
    )
    gate: str | None = Field(
        default=None,
        max_length=100,
        description="METRIC>=VALUE or METRIC<=VALUE (eval_loss, perplexity, rouge-1/2/l, bleu-4); the "
        "candidate must also do no worse than the live model on that metric (eval_loss when left out).",
    )
    auto_after_s: float | None = Field(
        default=None, gt=0, le=30 * 86400, description="Take all traffic this long after the gate passed."
    )
    max_samples: int = Field(default=100, ge=1, le=100_000, description="Evaluation records per model.")
    max_new_tokens: int = Field(default=32, ge=1, le=4096, description="Generated tokens per record.")


def _base(request: Request) -> str:
    return str(request.base_url)


@router.post("", status_code=201)
def create_deployment(body: DeploymentCreate, request: Request, ctx: Platform = Depends(platform)) -> dict:
    row = service.create(
        ctx,
        body.model,
        name=body.name,
        adapters=body.adapters,
        engine=body.engine,
        replicas=body.replicas,
        options={"max_batch_size": body.max_batch_size, "max_model_len": body.max_model_len},
    )
    return service.deployment_dict(ctx, row, _base(request))


@router.get("")
def list_deployments(request: Request, ctx: Platform = Depends(platform)) -> dict:
    return {"data": [service.deployment_dict(ctx, r, _base(request)) for r in service.list_all(ctx)]}


@router.get("/{name}")
def get_deployment(name: str, request: Request, ctx: Platform = Depends(platform)) -> dict:
    return service.deployment_dict(ctx, service.get(ctx, name), _base(request))


@router.patch("/{name}")
def update_deployment(
    name: str, body: DeploymentUpdate, request: Request, ctx: Platform = Depends(platform)
) -> dict:
    """Scale: new replicas start (cold, out of rotation until ready); the highest-numbered ones stop."""
    return service.deployment_dict(ctx, service.scale(ctx, name, body.replicas), _base(request))


@router.post("/{name}/stop")
def stop_deployment(name: str, request: Request, ctx: Platform = Depends(platform)) -> dict:
    return service.deployment_dict(ctx, service.stop(ctx, name), _base(request))


@router.post("/{name}/start")
def start_deployment(name: str, request: Request, ctx: Platform = Depends(platform)) -> dict:
    return service.deployment_dict(ctx, service.start(ctx, name), _base(request))


@router.post("/{name}/promote", status_code=202)
def promote_deployment(
    name: str, body: DeploymentPromote, request: Request, ctx: Platform = Depends(platform)
) -> dict:
    """Evaluate the candidate and the live model on the dataset; if it passes the gate, it starts as
    NAME-canary and takes ``canary_percent`` of the traffic. Follow ``rollout.stage`` and the events."""
    row = rollouts.promote(
        ctx,
        name,
        body.model,
        body.dataset,
        share=body.canary_percent / 100,
        gate=body.gate,
        auto_after_s=body.auto_after_s,
        max_samples=body.max_samples,
        max_new_tokens=body.max_new_tokens,
    )
    return service.deployment_dict(ctx, row, _base(request))


@router.post("/{name}/promote/confirm")
def confirm_promotion(name: str, request: Request, ctx: Platform = Depends(platform)) -> dict:
    """The canary takes all traffic and the name; the old model stays up as NAME-previous for rollback."""
    return service.deployment_dict(ctx, rollouts.confirm(ctx, name), _base(request))


@router.post("/{name}/rollback")
def rollback_deployment(name: str, request: Request, ctx: Platform = Depends(platform)) -> dict:
    """End a canary, or give the name back to the model that served before the last confirmed promotion."""
    return service.deployment_dict(ctx, rollouts.rollback(ctx, name), _base(request))


@router.delete("/{name}", status_code=204)
def delete_deployment(name: str, ctx: Platform = Depends(platform)) -> Response:
    """Stop and delete it; a promotion under way ends first (its evaluations cancelled, its canary gone)."""
    rollouts.remove(ctx, name)
    return Response(status_code=204)


@router.get("/{name}/events")
def deployment_events(name: str, ctx: Platform = Depends(platform)) -> dict:
    """Its events, oldest first: time, event, the English message, and the message's ``code`` and
    ``params`` (platform/event_codes.py) to say it in another language."""
    return {"data": service.events(ctx, name)}


@router.get("/{name}/logs")
def deployment_logs(
    name: str,
    ctx: Platform = Depends(platform),
    offset: int = Query(0, ge=0),
    replica: int = Query(0, ge=0, le=15),
) -> Response:
    row = service.get(ctx, name)
    path = service.folder(ctx, row.id) / f"replica-{replica}.log"
    data, next_offset = fmt.read_bytes(path, offset, 1 << 20)
    return Response(data, media_type="text/plain; charset=utf-8", headers={"X-Next-Offset": str(next_offset)})
