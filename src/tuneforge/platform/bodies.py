"""Request bodies on the control plane, all read through ``tuneforge.serve.body``:

- the JSON bodies FastAPI parses for its routes (``POST /api/v1/jobs`` …) are read first here, bounded in
  size and nesting, so a hostile body is a 413/400 in the API's shape, never a RecursionError;
- multipart uploads (datasets, ``/v1/files``, command-job code) count their bytes as they arrive, so a
  chunked body without Content-Length stops at the limit instead of being spooled whole by
  ``request.form()`` first.

Errors are ``BodyError``s; the app's handler shapes them per protocol (OpenAI under ``/v1``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from starlette.datastructures import FormData

from tuneforge.serve import body as request_body
from tuneforge.settings import env_name

from .deps import admin, principal

UPLOAD_SETTING = env_name("max_dataset_mb")  # what raises the limit of every upload
PIECE = 1 << 20  # what an upload is copied by
FORM_OVERHEAD = 1 << 20  # multipart boundaries, part headers and the small fields around the files


async def read_form(request: Request, limit: int, *, max_files: int, max_fields: int) -> FormData:
    """``request.form()`` over a body refused (413) once it is more than ``limit`` plus the multipart
    overhead: by its Content-Length before anything is read, or as its bytes arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit + FORM_OVERHEAD):
        raise request_body.too_large(limit, "upload", UPLOAD_SETTING)
    received = 0

    async def counting_receive():
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit + FORM_OVERHEAD:
                raise request_body.too_large(limit, "upload", UPLOAD_SETTING)
        return message

    # the parser closes the parts it spooled so far when the exception passes through it
    return await Request(request.scope, counting_receive).form(max_files=max_files, max_fields=max_fields)


def multipart_doc(properties: dict, required: list[str]) -> dict:
    """The OpenAPI request body of a route that reads its multipart form itself (``read_form``), which
    FastAPI cannot see: for ``openapi_extra``."""
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True}}


async def save_part(part, target: Path, limit: int, received: int = 0, what: str = "upload") -> int:
    """Copy one uploaded part (Starlette spools it to a temporary file past 1 MiB) to ``target`` in 1 MiB
    pieces, counting: past ``limit`` bytes, with the ``received`` bytes of the parts before it, a 413.
    Returns the count so far."""
    with open(target, "wb") as out:
        while chunk := await part.read(PIECE):
            received += len(chunk)
            if received > limit:
                raise request_body.too_large(limit, what, UPLOAD_SETTING)
            out.write(chunk)
    return received


def _json_typed(content_type: str | None, strict: bool) -> bool:
    """What FastAPI parses as JSON (its routing rule): application/json or application/*+json, and no
    content type at all only where the route is not strict about it (FastAPI's default is strict)."""
    if not content_type:
        return not strict
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class BoundedJsonRoute(APIRoute):
    """A route whose JSON body FastAPI parses reads it through the bounded reader (the routers'
    ``route_class``), after the router's authentication: a caller without a valid token gets its 401
    before a byte of a large body is read or parsed. The value parsed here is handed to FastAPI, which
    parses no second time. Routes that read their own body (uploads, the gateway) have no body field
    and are left as they are."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        strict = getattr(self, "strict_content_type", False)  # FastAPI before 0.13x: not strict
        strict = strict.value if isinstance(strict, DefaultPlaceholder) else bool(strict)
        # the router's own token checks; FastAPI runs them again, answered from request.state
        checks = [d.dependency for d in self.dependencies if d.dependency in (principal, admin)]

        async def bounded(request: Request):
            for check in checks:
                await check(request)
            raw = await request_body.read_body(request.stream(), request.headers.get("content-length"))
            if raw and _json_typed(request.headers.get("content-type"), strict):
                # Starlette's cache of the parsed body, which FastAPI's handler reads (request.json())
                request._json = request_body.loads(raw)
            request._body = raw  # Starlette's cache of the body: what FastAPI reads first
            return await handler(request)

        return bounded
