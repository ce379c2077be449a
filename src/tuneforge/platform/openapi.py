"""The OpenAPI document, made to match the answers (schemathesis checks it in the tests).

FastAPI documents what a route returns when it succeeds and a 422 of its own shape; the answers also
hold the errors the app's handlers shape, in each protocol's format. One pass over the generated
document adds them to every operation, so a route cannot forget one:

- control plane (``/api/…``): ``{"detail": "…", "problems"?: [...]}``: 400 413 401 403 404 409 422 503;
- OpenAI (``/v1/…``): ``{"error": {"message", "type", "param", "code"}}``: an invalid request is 400 there,
  never 422 (the clients raise BadRequestError); the gateway adds 502 and 503;
- KServe/Triton (``/v2/…``): ``{"error": "…"}``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

DETAIL = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "What is wrong and how to fix it."},
        "code": {"type": "string", "description": "A stable name of the error (not_found, invalid_spec, …)."},
        "params": {"type": "object", "description": "The values the code's message in any language needs."},
        "problems": {
            "type": "array",
            "items": {"type": "object"},
            "description": "Every problem found, each with where it is (loc/field, file, line, record).",
        },
    },
}
OPENAI = {
    "title": "OpenAIError",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
V2 = {
    "title": "V2Error",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}

WHY = {
    400: "The request cannot be read or used (a body that is not the JSON it must be, a bad value).",
    401: "No valid token.",
    403: "The token's scope does not allow this.",
    404: "No such object.",
    409: "The object's state does not allow this now.",
    413: "The body is over its limit.",
    422: "The request does not validate: every problem, located.",
    502: "The deployment's worker failed while answering.",
    503: "Not possible now (starting, busy, out of a resource); retry later.",
}


def _errors(path: str, method: str) -> tuple[str, list[int]]:
    """(the schema's name, the statuses) of the errors one operation may answer."""
    statuses = [400, 401, 403, 404, 503]
    if method not in ("get", "head"):
        statuses += [409, 413]
    if path.startswith("/v2/"):
        return "V2Error", [*statuses, 502]
    if path.startswith("/v1/"):
        return "OpenAIError", [*statuses, 502]
    return "Error", [*statuses, 422]


def document(app: FastAPI) -> dict:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({"Error": DETAIL, "OpenAIError": OPENAI, "V2Error": V2})
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            name, statuses = _errors(path, method)
            answers = op.setdefault("responses", {})
            if name != "Error":
                answers.pop("422", None)  # FastAPI's own shape; these protocols answer 400 instead
            for status in statuses:
                answers[str(status)] = {
                    "description": WHY[status],
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def install(app: FastAPI) -> None:
    """``app.openapi()`` (and ``/openapi.json``) answers the document above, built once."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi


def allowed_methods(app: FastAPI, path: str) -> str | None:
    """The ``Allow`` header of a 405 for ``path``: the methods of the most specific routes matching it
    (``/api/v1/jobs/code`` is the code upload, not a job named "code"), as the document lists them.
    None when no API route matches (the console's static files answer their own)."""
    routes = app.state.api_routes
    hits = [r for r in routes if r.path_regex.match(path)]
    if not hits:
        return None
    fewest = min(r.path.count("{") for r in hits)
    methods = {m for r in hits if r.path.count("{") == fewest for m in r.methods}
    return ", ".join(sorted(methods))
