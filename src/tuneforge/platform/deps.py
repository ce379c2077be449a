"""Dependencies of the routes: the platform context and the caller's token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from .auth import Principal, answers_at_once, authenticate
from .context import Platform


class AuthFailed(Exception):
    """401 (no valid token) or 403 (a valid token without the scope): shaped by the app's handler."""

    def __init__(self, status: int):
        self.status = status


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, and that
# hop (a thread wake-up and two GIL hand-overs) cost more CPU than a whole job lookup; three of them per
# request were a quarter of a ``GET /api/v1/jobs/{id}``. Only a token's database read leaves the loop.
async def platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(platform)]  # a route's ``ctx: PlatformDep``


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


FORM_TYPE = b"application/x-www-form-urlencoded"


class CurlJsonBodies:
    """ASGI middleware: a JSON body that curl labelled a form, on a request with a bearer header, is JSON.

    ``curl -d '{...}'`` sends ``Content-Type: application/x-www-form-urlencoded`` unless told otherwise,
    and FastAPI reads only JSON-typed bodies as JSON (422 "Input should be a valid dictionary"). No
    ``/api/`` route takes a form. This weakens no CSRF rule: the rule above rests on headers another
    site's page cannot send (``Authorization``, ``X-Requested-With``), never on the content type, and
    only requests that carry ``Authorization`` are relabelled. Cookie requests and the sign-in, which
    has no header, still need a JSON type: a form-typed post is what a forged cross-site form sends
    (the sign-in would otherwise let another site sign a browser in to the attacker's session).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            headers = scope["headers"]
            types = [v.split(b";")[0].strip().lower() for k, v in headers if k == b"content-type"]
            if types == [FORM_TYPE] and any(k == b"authorization" for k, _ in headers):
                relabelled = [(k, b"application/json" if k == b"content-type" else v) for k, v in headers]
                scope = {**scope, "headers": relabelled}
        await self.app(scope, receive, send)


def caller_at_once(request: Request, store) -> tuple[bool, Principal | None]:
    """``(True, principal or None)`` when the request's credentials are answered without the database (a
    malformed header, a token whose row was read moments ago); ``(False, None)`` when the row must be read."""
    header = credentials(request)
    if answers_at_once(store, header):
        return True, authenticate(store, header)
    return False, None


async def caller(request: Request) -> Principal | None:
    """The principal behind the request's credentials (None: no valid token); a database read, when the
    token's row is not cached, in a worker thread."""
    store = request.app.state.platform.store
    known, who = caller_at_once(request, store)
    if known:
        return who
    return await run_in_threadpool(authenticate, store, credentials(request))


async def principal(request: Request) -> Principal:
    # a route that authenticated before reading its body (platform.bodies) looked this request up already
    if (known := getattr(request.state, "principal", None)) is not None:
        return known
    who = await caller(request)
    if who is None:
        raise AuthFailed(401)
    request.state.principal = who
    return who


async def admin(request: Request) -> Principal:
    who = await principal(request)
    if not who.is_admin:
        raise AuthFailed(403)
    return who


AdminDep = Annotated[Principal, Depends(admin)]
