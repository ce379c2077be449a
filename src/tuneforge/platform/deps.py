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


SESSION_COOKIE = "tuneforge_session"
CSRF_HEADER = "x-requested-with"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def credentials(request: Request) -> str | None:
    """The ``Authorization`` header, or the console's session cookie as one.

    A cookie rides along on any request the browser makes, a forged cross-site form post included, so a
    cookie-authenticated unsafe method must also carry ``X-Requested-With``: a custom header, which a
    page of another origin cannot set without a CORS preflight this server never grants. (The cookie is
    also SameSite=Strict: belt and braces.)
    """
    header = request.headers.get("authorization")
    if header:
        return header
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
        return None
    return f"Bearer {cookie}"


def principal(request: Request) -> Principal:
    ctx: Platform = request.app.state.platform
    who = authenticate(ctx.store, credentials(request))
    if who is None:
        raise AuthFailed(401)
    request.state.principal = who
    return who


def admin(request: Request) -> Principal:
    who = principal(request)
    if not who.is_admin:
        raise AuthFailed(403)
    return who
