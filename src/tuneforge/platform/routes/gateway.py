"""The gateway on the control plane's own port: OpenAI ``/v1`` inference routes and KServe/Triton
``/v2/models/{deployment}/…``, forwarded to a ready worker (round robin) with the worker's own key.

Token: admin, or ``deployment:NAME`` for that deployment only (another deployment → 403). Errors come in
each protocol's own shape (OpenAI ``{"error": {…}}``, v2 ``{"error": "…"}``). Answers stream through as
the worker writes them (SSE chunk by chunk, binary tensors byte for byte); nothing is buffered whole.
"""

from __future__ import annotations

import json
import logging
import re

import anyio
import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.serve import body as request_body
from tuneforge.serve.openai import error_body

from .. import deployments as service
from .. import rollouts
from ..auth import Principal
from ..context import Platform
from ..db import Deployment
from ..deps import caller

log = logging.getLogger(__name__)
router = APIRouter(tags=["gateway"])
REQUEST_HEADERS = {"content-type", "accept", "inference-header-content-length", "user-agent"}
DROPPED_RESPONSE_HEADERS = {"connection", "keep-alive", "transfer-encoding", "server", "date"}
V2_SUFFIX = re.compile(r"^(ready|infer|generate|generate_stream|versions/[A-Za-z0-9._-]+(/(ready|infer))?)$")


class GatewayError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        self.status, self.message, self.code, self.param = status, message, code, param


def _openai_error(e: GatewayError) -> JSONResponse:
    kind = {401: "invalid_request_error", 403: "permission_error", 404: "invalid_request_error"}
    body = error_body(e.message, kind.get(e.status, "invalid_request_error"), e.param, e.code)
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse(body, status_code=e.status, headers=headers)


def _v2_error(e: GatewayError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)


def _ctx(request: Request) -> Platform:
    return request.app.state.platform


def _client(ctx: Platform) -> httpx.AsyncClient:
    client = ctx.gateway_client
    if client is None:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        ctx.gateway_client = client
    return client


async def close(ctx: Platform) -> None:
    client, ctx.gateway_client = ctx.gateway_client, None
    if client is not None:
        await client.aclose()


async def _who(request: Request) -> Principal:
    # The console's session cookie counts as a bearer token here too (same CSRF rule as the API).
    who = await caller(request)
    if who is None:
        raise GatewayError(401, "invalid or missing token", "invalid_api_key")
    return who


def _allowed(who: Principal, dep: Deployment) -> bool:
    return who.is_admin or who.scope == f"deployment:{dep.name}"


def _match(deps: list[Deployment], model: str, who: Principal) -> tuple[Deployment, str] | None:
    """The deployment and worker model id a name reaches. Several deployments may serve the same id:
    one the caller may use wins (a deployment token reaches its own deployment, not a 403 from
    another's), then a ready one."""
    found = []
    for dep in deps:
        ids = service.model_ids(dep)
        if model in (dep.name, dep.default_model_id):  # the API shows default_model_id as the id to use
            found.append((dep, dep.default_model_id))
        elif model.startswith(dep.name + "/") and model[len(dep.name) + 1 :] in ids:
            found.append((dep, model[len(dep.name) + 1 :]))
        elif model != "__base__" and model in dep.aliases:
            found.append((dep, dep.aliases[model]))
    found.sort(key=lambda f: (not _allowed(who, f[0]), f[0].state != "ready"))
    return found[0] if found else None


async def _target(request: Request, who: Principal, model: str | None):
    """(deployment, worker model id, worker) for a model name, or a GatewayError."""
    ctx = _ctx(request)
    deps = await run_in_threadpool(service.list_all, ctx)
    if model is None and not who.is_admin:
        model = who.scope.removeprefix("deployment:")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "'model' is required: a deployment name (GET /v1/models)", None, "model")
    hit = _match(deps, model, who)
    if hit is None:
        raise GatewayError(
            404, f"no deployment serves model {model!r}; see GET /v1/models", "model_not_found", "model"
        )
    dep, model_id = hit
    if not _allowed(who, dep):
        raise GatewayError(403, f"this token's scope does not allow deployment {dep.name!r}", "forbidden")
    dep, model_id = rollouts.route(ctx, deps, dep, model_id)  # a canary's share of the traffic
    worker = ctx.deployments.pick(dep.id) if dep.state == "ready" else None
    if worker is None:
        if dep.state in ("starting", "ready"):  # ready in the table; its worker is being restarted
            raise GatewayError(
                503, f"deployment {dep.name!r} is starting; retry in a few seconds", "starting"
            )
        raise GatewayError(
            404, f"deployment {dep.name!r} is {dep.state}, not serving", "model_not_found", "model"
        )
    return dep, model_id, worker


async def _read_body(request: Request) -> bytes:
    return await request_body.read_body(request.stream(), request.headers.get("content-length"))


async def _forward(request: Request, dep: Deployment, worker, path: str, body: bytes | None) -> Response:
    """Send to the worker and relay its answer as it comes; one retry on another replica if the
    chosen one refuses the connection (it may have just died)."""
    ctx = _ctx(request)
    sup = ctx.deployments
    headers = {k: v for k, v in request.headers.items() if k.lower() in REQUEST_HEADERS}
    for attempt in range(2):
        headers["authorization"] = f"Bearer {worker.key}"
        url = worker.url(path)
        if url is None:  # not placed by its executor yet (a cluster): never guess a host
            raise GatewayError(503, f"deployment {dep.name!r} has no placed replica yet; retry")
        upstream = _client(ctx).build_request(
            request.method,
            url,
            headers=headers,
            content=body,
            params=request.query_params,
        )
        try:
            resp = await _client(ctx).send(upstream, stream=True)
            break
        except httpx.ConnectError:
            sup.mark_unreachable(dep.id, worker)
            worker = sup.pick(dep.id)
            if worker is None or attempt == 1:
                raise GatewayError(503, f"deployment {dep.name!r} has no reachable replica; retry") from None
        except httpx.HTTPError as exc:
            raise GatewayError(
                502, f"deployment {dep.name!r}: {type(exc).__name__} from its worker"
            ) from None

    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        error_event = _openai_stream_error if path.startswith("/v1/") else _v2_stream_error
        body = _relay_sse(resp, dep, error_event)
    else:
        body = _relay(resp)
    out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in DROPPED_RESPONSE_HEADERS}
    return StreamingResponse(body, status_code=resp.status_code, headers=out_headers)


async def _relay(resp: httpx.Response):
    """Bytes as they come. If the worker fails midway, the error propagates and the connection is cut,
    so the client sees a truncated body rather than a complete one."""
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):  # close upstream even when the client went away
            await resp.aclose()


MAX_SSE_EVENT_BYTES = 1 << 20


async def _relay_sse(resp: httpx.Response, dep: Deployment, error_event):
    """Server-sent events, whole events at a time. If the worker fails midway (killed: the read ends
    with RemoteProtocolError), the half-written event is dropped and an error event in the protocol's
    shape ends the stream, which its clients raise on (the openai SDK's APIError), instead of a clean
    end that looks like a finished answer."""
    pending = b""
    try:
        async for chunk in resp.aiter_raw():
            pending += chunk
            cut = pending.rfind(b"\n\n") + 2
            if cut == 1 and len(pending) > MAX_SSE_EVENT_BYTES:  # no event boundary: pass it on as is
                cut = len(pending)
            if cut > 1:
                yield pending[:cut]
                pending = pending[cut:]
        if pending:
            yield pending
    except httpx.TransportError as exc:
        what = type(exc).__name__
        log.warning("deployment %s: the worker's stream broke off: %s: %s", dep.name, what, exc)
        message = f"deployment {dep.name!r}: its worker stopped in the middle of this answer ({what}); retry"
        yield b"data: " + json.dumps(error_event(message)).encode() + b"\n\n"
    finally:
        with anyio.CancelScope(shield=True):  # close upstream even when the client went away
            await resp.aclose()


def _openai_stream_error(message: str) -> dict:
    return error_body(message, "server_error", code="worker_failed")


def _v2_stream_error(message: str) -> dict:
    return {"error": message}


# -- OpenAI --------------------------------------------------------------------------------------------


def _model_entries(dep: Deployment) -> list[dict]:
    created = int(dep.created_at)
    base = {"object": "model", "created": created, "owned_by": "tuneforge", "deployment": dep.name}
    out = [{**base, "id": dep.name, "root": dep.default_model_id}]
    for mid in service.model_ids(dep):
        base_id = dep.aliases.get("__base__")  # absent when the base is not served (a merged DoRA fine-tune)
        parent = f"{dep.name}/{base_id}" if base_id and mid != base_id else None
        out.append({**base, "id": f"{dep.name}/{mid}", "root": mid, "parent": parent})
    for name, mid in dep.aliases.items():
        if name != "__base__" and "@" not in name:
            out.append({**base, "id": name, "root": mid, "parent": None})
    return out


@router.get("/v1/models", tags=["gateway"])
async def list_models(request: Request):
    try:
        who = await _who(request)
    except GatewayError as e:
        return _openai_error(e)
    deps = await run_in_threadpool(service.list_all, _ctx(request))
    data, seen = [], set()
    for dep in reversed(deps):  # oldest first
        if dep.state != "ready" or not _allowed(who, dep):
            continue
        for entry in _model_entries(dep):
            if entry["id"] not in seen:
                seen.add(entry["id"])
                data.append(entry)
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request):
    try:
        who = await _who(request)
        dep, model_id, _ = await _target(request, who, model)
    except GatewayError as e:
        return _openai_error(e)
    entry = next((m for m in _model_entries(dep) if m["id"] == model), None)
    return entry or {"id": model, "object": "model", "owned_by": "tuneforge", "root": model_id}


async def _openai_call(request: Request, path: str):
    try:
        who = await _who(request)
        body = request_body.loads_object(await _read_body(request))
        dep, model_id, worker = await _target(request, who, body.get("model"))
        body["model"] = model_id
        return await _forward(request, dep, worker, path, json.dumps(body).encode())
    except GatewayError as e:
        return _openai_error(e)
    except request_body.BodyError as e:
        return _openai_error(GatewayError(e.status, str(e), None, "body"))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    return await _openai_call(request, "/v1/chat/completions")


@router.post("/v1/completions")
async def completions(request: Request):
    return await _openai_call(request, "/v1/completions")


# -- KServe v2 / Triton -------------------------------------------------------------------------------


@router.get("/v2/health/live")
@router.get("/v2/health/ready")
async def health() -> dict:
    return {"live": True}


async def _v2(request: Request, name: str, suffix: str):
    try:
        who = await _who(request)
        if suffix and not V2_SUFFIX.match(suffix):
            raise GatewayError(404, f"no route /v2/models/{name}/{suffix}")
        dep, model_id, worker = await _target(request, who, name)
        body = await _read_body(request) if request.method == "POST" else None
        path = f"/v2/models/{model_id}" + (f"/{suffix}" if suffix else "")
        return await _forward(request, dep, worker, path, body)
    except GatewayError as e:
        return _v2_error(e)
    except request_body.BodyError as e:
        return _v2_error(GatewayError(e.status, str(e)))


@router.get("/v2/models/{name}")
async def v2_model(name: str, request: Request):
    return await _v2(request, name, "")


@router.get("/v2/models/{name}/{suffix:path}")
async def v2_model_get(name: str, suffix: str, request: Request):
    return await _v2(request, name, suffix)


@router.post("/v2/models/{name}/{suffix:path}")
async def v2_model_post(name: str, suffix: str, request: Request):
    return await _v2(request, name, suffix)
