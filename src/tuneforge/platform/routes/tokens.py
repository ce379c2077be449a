"""/api/v1/tokens: create (the secret is shown once), list (never the secret), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .. import auth
from ..bodies import BoundedJsonRoute
from ..context import Platform
from ..db import Token
from ..deps import admin, platform
from ..schemas import TokenCreate

router = APIRouter(
    prefix="/api/v1/tokens", tags=["tokens"], dependencies=[Depends(admin)], route_class=BoundedJsonRoute
)


def token_dict(row: Token) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "scope": row.scope,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
    }


@router.post("", status_code=201)
def create_token(body: TokenCreate, ctx: Platform = Depends(platform)) -> dict:
    row, secret = auth.create_token(ctx.store, body.name, body.scope, auth.parse_duration(body.expires))
    return {**token_dict(row), "token": secret}


@router.get("")
def list_tokens(ctx: Platform = Depends(platform)) -> dict:
    return {"data": [token_dict(t) for t in auth.list_tokens(ctx.store)]}


@router.delete("/{token_id}")
def revoke_token(token_id: str, ctx: Platform = Depends(platform)) -> dict:
    return token_dict(auth.revoke_token(ctx.store, token_id))
