"""/api/v1/session: the web console's sign-in. A token in, an HttpOnly SameSite=Strict cookie out.

The cookie holds the token itself (the server keeps no session table: revoking the token ends every
session made with it). Scripts keep using the ``Authorization: Bearer`` header.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from ..auth import Principal, authenticate
from ..bodies import BoundedJsonRoute
from ..context import Platform
from ..deps import SESSION_COOKIE, AuthFailed, admin, platform
from ..schemas import Body

router = APIRouter(prefix="/api/v1/session", tags=["session"], route_class=BoundedJsonRoute)


class SessionCreate(Body):
    token: str = Field(min_length=1, max_length=300, description="An admin token (tf_…).")


def _who(who: Principal) -> dict:
    return {"token_id": who.token_id, "name": who.name, "scope": who.scope}


@router.post("", status_code=201)
def sign_in(body: SessionCreate, request: Request, response: Response, ctx: Platform = Depends(platform)):
    """Checks the token and sets the session cookie. Only admin tokens open the console."""
    who = authenticate(ctx.store, f"Bearer {body.token.strip()}")
    if who is None:
        raise AuthFailed(401)
    if not who.is_admin:
        raise AuthFailed(403)
    response.set_cookie(
        SESSION_COOKIE,
        body.token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return _who(who)


@router.get("")
def current(who: Principal = Depends(admin)) -> dict:
    return _who(who)


@router.delete("", status_code=204)
def sign_out() -> Response:
    """Clears the cookie (no token needed: signing out can never be refused)."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
