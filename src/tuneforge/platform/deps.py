"""Dependencies of the routes: the platform context and the caller's token."""

from __future__ import annotations

from fastapi import Request

from .auth import Principal, authenticate
from .context import Platform


class AuthFailed(Exception):
    """401 (no valid token) or 403 (a valid token without the scope): shaped by the app's handler."""

    def __init__(self, status: int):
        self.status = status


def platform(request: Request) -> Platform:
    return request.app.state.platform


def principal(request: Request) -> Principal:
    ctx: Platform = request.app.state.platform
    who = authenticate(ctx.store, request.headers.get("authorization"))
    if who is None:
        raise AuthFailed(401)
    request.state.principal = who
    return who


def admin(request: Request) -> Principal:
    who = principal(request)
    if not who.is_admin:
        raise AuthFailed(403)
    return who
