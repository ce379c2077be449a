"""/healthz (no token: load balancers and the CLI ask it) and Prometheus /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import text

from ..context import Platform
from ..deps import platform

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(ctx: Platform = Depends(platform)) -> dict:
    with ctx.store.reading() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics", include_in_schema=False)
def metrics(ctx: Platform = Depends(platform)) -> Response:
    from ..metrics import render

    body, content_type = render(ctx)
    return Response(body, media_type=content_type)
