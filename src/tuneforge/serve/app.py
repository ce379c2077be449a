"""The serving worker's HTTP routes: read the body (the bounded reader, ``body.py``), validate it as
its protocol's request type, call one protocol handler, shape the response.

OpenAI routes answer errors as ``{"error": {message, type, param, code}}``; KServe/Triton routes as
``{"error": "..."}``; statuses: 400 bad request, 401 bad key, 404 unknown model, 413 body too large,
503 queue full. No traceback ever leaves the process. ``/openapi.json`` describes the routes and their
request types (FastAPI does not parse these bodies, so the routes name their types for it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic.json_schema import models_json_schema

from tuneforge import __version__
from tuneforge.errors import TuneforgeError

from . import body as request_body
from . import kserve, openai, triton_generate
from .engine.base import BadRequest, GenerationFailed, QueueFull, UnknownModel
from .metrics import CONTENT_TYPE, ServeMetrics
from .openai_protocol import ChatCompletionRequest, CompletionRequest
from .params import RequestModel
from .state import ServingState

log = logging.getLogger(__name__)

OPEN_PATHS = {"/health", "/v2/health/live", "/v2/health/ready"}
Typed = TypeVar("Typed", bound=RequestModel)


class ClientGone(Exception):
    pass


class HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str, param: str | None = None):
        self.status, self.message, self.type, self.param = status, message, type_, param


def classify(exc: Exception) -> HTTPError:
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, request_body.BodyError):
        return HTTPError(exc.status, str(exc), "BadRequestError", "body")
    if isinstance(exc, UnknownModel):
        return HTTPError(404, str(exc), "NotFoundError", "model")
    if isinstance(exc, QueueFull):
        return HTTPError(503, str(exc), "ServiceUnavailableError")
    if isinstance(exc, GenerationFailed):  # already logged by the engine; the others went on
        return HTTPError(500, str(exc), "InternalServerError")
    if isinstance(exc, BadRequest):
        return HTTPError(400, str(exc), "BadRequestError", exc.param)
    if isinstance(exc, TuneforgeError):
        return HTTPError(400, str(exc), "BadRequestError")
    log.exception("unexpected error while serving a request")
    return HTTPError(
        500, f"internal error ({type(exc).__name__}); see the server log.", "InternalServerError"
    )


def openai_error(err: HTTPError) -> JSONResponse:
    code = {401: "invalid_api_key", 404: "model_not_found", 503: "server_overloaded"}.get(err.status)
    return JSONResponse(openai.error_body(err.message, err.type, err.param, code), status_code=err.status)


def v2_error(err: HTTPError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status)


async def read_body(request: Request) -> bytes:
    return await request_body.read_body(request.stream(), request.headers.get("content-length"))


async def read_typed(request: Request, model: type[Typed]) -> Typed:
    """The body read by the bounded reader, then validated as ``model`` (a BadRequest naming the field)."""
    return model.parse(request_body.loads_object(await read_body(request)))


async def until_disconnect(request: Request, coro):
    """Run ``coro``; if the client goes away first, cancel it (which cancels its generations)."""
    task = asyncio.ensure_future(coro)

    async def watch():
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone()


def sse(events, terminal_done: bool):
    async def body():
        async for e in events:
            yield f"data: {e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class AuthAndCount:
    """Pure ASGI (not BaseHTTPMiddleware, which buffers and hides client disconnects from streams):
    checks the bearer key and counts requests by route and status."""

    def __init__(self, app, api_key: str | None, metrics: ServeMetrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.api_key and path not in OPEN_PATHS:
            header = dict(scope["headers"]).get(b"authorization", b"")
            token = header[7:].strip() if header[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.api_key.encode()):
                err = HTTPError(
                    401, "missing or wrong API key: send 'Authorization: Bearer KEY'.", "AuthenticationError"
                )
                self.metrics.requests.labels(_route(path), "401").inc()
                response = openai_error(err) if path.startswith("/v1") else v2_error(err)
                return await response(scope, receive, send)
        status = {}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if path != "/metrics" and not path.startswith("/v2/health"):
                self.metrics.requests.labels(_route(path), str(status.get("code", 499))).inc()


def json_body(model: type[RequestModel]) -> dict:
    """The ``openapi_extra`` of a route whose body is ``model`` (FastAPI sees no body parameter)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def openapi_document(app: FastAPI, models: list[type[RequestModel]]) -> dict:
    """FastAPI's document of the routes, with the request types the routes name in ``json_body``."""
    document = get_openapi(title=app.title, version=__version__, routes=app.routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    document.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
    return document


async def answer(request: Request, start, error, respond) -> Response:
    """``start()`` reads and validates the body and returns the handler's coroutine, which runs until
    the client leaves; its result goes through ``respond``, its error through ``error``."""
    try:
        result = await until_disconnect(request, await start())
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return error(classify(exc))
    return respond(result)


def openai_response(result) -> Response:
    return JSONResponse(result) if isinstance(result, dict) else sse(result, True)


def kserve_response(result: tuple[dict, bytes | None]) -> Response:
    response, blob = result
    if blob is None:
        return JSONResponse(response)
    head = json.dumps(response).encode()
    return Response(
        head + blob,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


def create_app(
    state: ServingState, api_key: str | None = None, metrics: ServeMetrics | None = None
) -> FastAPI:
    metrics = metrics or state.metrics or ServeMetrics()
    app = FastAPI(title="tuneforge serve", docs_url=None, redoc_url=None, openapi_url="/openapi.json")

    def openapi() -> dict:
        if app.openapi_schema is None:  # built once, on the first GET /openapi.json
            app.openapi_schema = openapi_document(app, REQUEST_MODELS)
        return app.openapi_schema

    app.openapi = openapi

    app.add_middleware(AuthAndCount, api_key=api_key, metrics=metrics)

    @app.get("/health")
    async def health():
        return Response(status_code=200 if state.engine.ready else 503)

    @app.get("/v1/models")
    async def v1_models():
        return openai.list_models(state)

    @app.get("/v1/models/{name:path}")
    async def v1_model(name: str):
        for item in openai.list_models(state)["data"]:
            if item["id"] == name:
                return item
        return openai_error(classify(UnknownModel(name, list(state.served.variants))))

    def typed(request: Request, model: type[RequestModel], handler, *args):
        """``answer``'s start: the body as ``model``, handed to ``handler(state, *args, body)``."""

        async def start():
            return handler(state, *args, await read_typed(request, model))

        return start

    @app.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest))
    async def chat(request: Request):
        start = typed(request, ChatCompletionRequest, openai.chat_completions)
        return await answer(request, start, openai_error, openai_response)

    @app.post("/v1/completions", openapi_extra=json_body(CompletionRequest))
    async def completions(request: Request):
        start = typed(request, CompletionRequest, openai.completions)
        return await answer(request, start, openai_error, openai_response)

    # -- KServe / Open Inference Protocol v2 ---------------------------------------------------
    @app.get("/v2")
    async def v2_server():
        return kserve.server_metadata()

    @app.get("/v2/health/live")
    async def v2_live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready():
        ready = state.engine.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    def v2_call(fn):
        try:
            return JSONResponse(fn())
        except Exception as exc:
            return v2_error(classify(exc))

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_model(name: str, version: str | None = None):
        return v2_call(lambda: kserve.model_metadata(state, name))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_ready(name: str, version: str | None = None):
        def ready():
            state.variant(name)
            if not state.engine.ready:
                raise HTTPError(503, "the engine is not running.", "ServiceUnavailableError")
            return {"name": name, "ready": True}

        return v2_call(ready)

    @app.post("/v2/models/{name}/infer", openapi_extra=json_body(kserve.InferRequest))
    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=json_body(kserve.InferRequest))
    async def v2_infer(name: str, request: Request, version: str | None = None):
        async def start():
            header = request.headers.get("inference-header-content-length")
            infer_request, tail = kserve.split_body(await read_body(request), header)
            return kserve.infer(state, name, infer_request, tail)

        return await answer(request, start, v2_error, kserve_response)

    generate_body = json_body(triton_generate.GenerateRequest)

    @app.post("/v2/models/{name}/generate", openapi_extra=generate_body)
    async def v2_generate(name: str, request: Request):
        start = typed(request, triton_generate.GenerateRequest, triton_generate.generate, name)
        return await answer(request, start, v2_error, JSONResponse)

    @app.post("/v2/models/{name}/generate_stream", openapi_extra=generate_body)
    async def v2_generate_stream(name: str, request: Request):
        start = typed(request, triton_generate.GenerateRequest, triton_generate.generate_stream, name)
        return await answer(request, start, v2_error, lambda events: sse(events, False))

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


REQUEST_MODELS = [
    ChatCompletionRequest,
    CompletionRequest,
    kserve.InferRequest,
    triton_generate.GenerateRequest,
]


def _route(path: str) -> str:
    """A bounded label: the route's shape, never the raw path (model names, junk URLs)."""
    if path.startswith("/v1/"):
        return path if path in ("/v1/chat/completions", "/v1/completions", "/v1/models") else "/v1/other"
    if path.startswith("/v2/models/"):
        tail = path.rsplit("/", 1)[-1]
        return (
            f"/v2/models/*/{tail}"
            if tail in ("infer", "generate", "generate_stream", "ready")
            else "/v2/models/*"
        )
    return path if path in ("/v2", "/health", "/metrics", "/openapi.json") else "other"
