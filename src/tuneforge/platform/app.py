"""The app factory: store (migrated), admin token, executor, supervisor, routers, error handlers."""

from __future__ import annotations

import contextlib
import logging
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.errors import DataError, TuneforgeError
from tuneforge.jobs.executor import Executor, LocalExecutor
from tuneforge.settings import Settings, get_settings

from . import error_codes, migrate, openai_ft, openapi
from .answer_cache import AnswerCache
from .auth import ensure_admin_token
from .context import Platform
from .db import Store, default_url
from .deps import AuthFailed, CurlJsonBodies
from .exports import Exports
from .hot_reads import HotReads
from .jobs import SpecProblems
from .metrics import RequestMetrics
from .pulls import Pulls
from .replicas import DeploymentSupervisor
from .supervisor import Supervisor

log = logging.getLogger(__name__)


def routers() -> list:
    """Every router of the control plane; deployments and the gateway append theirs here."""
    from .routes import (
        datasets,
        evaluations,
        exports,
        health,
        jobs,
        models,
        openai_ft,
        session,
        templates,
        tokens,
    )

    return [
        health.router,
        session.router,
        tokens.router,
        datasets.router,
        templates.router,
        models.router,
        exports.router,
        jobs.router,
        evaluations.router,
        openai_ft.router,
        *_deployment_routers(),
    ]


def jobs_routes() -> list:
    from .routes import jobs

    return jobs.router.routes


def _deployment_routers() -> list:
    from .routes import deployments, gateway

    return [deployments.router, gateway.router]


def database_url(settings: Settings) -> str:
    return os.environ.get("TUNEFORGE_DATABASE_URL") or default_url(settings.root)


def make_executor(settings: Settings) -> Executor:
    """The executor ``TUNEFORGE_EXECUTOR`` names; ray is imported only when it is the one."""
    if settings.executor == "ray":
        from tuneforge.jobs.ray_cluster import connect

        return connect(settings)
    return LocalExecutor()


def build_platform(
    settings: Settings | None = None, executor: Executor | None = None
) -> tuple[Platform, str | None]:
    """The shared context, with the database migrated and the admin token made on first start."""
    settings = settings or get_settings()
    settings.root.mkdir(parents=True, exist_ok=True)
    store = Store(database_url(settings))
    migrate.upgrade(store.engine)
    secret = ensure_admin_token(store, settings.root)
    ctx = Platform(
        settings=settings,
        store=store,
        executor=executor or make_executor(settings),
        max_upload_bytes=settings.max_dataset_mb << 20,
        answers=AnswerCache(settings.answer_cache_mb << 20),
    )
    ctx.supervisor = Supervisor(ctx)
    ctx.supervisor.before_success.append(openai_ft.register_before_success)
    ctx.deployments = DeploymentSupervisor(ctx)
    ctx.pulls = Pulls(ctx)
    ctx.exports = Exports(ctx)
    return ctx, secret


def _openai(path: str) -> bool:
    return path.startswith("/v1/")


def _param(extra: dict | None) -> str | None:
    """OpenAI's ``param``: the field of the first problem (``hyperparameters.n_epochs``), if any."""
    problems = (extra or {}).get("problems") or []
    first = problems[0] if problems and isinstance(problems[0], dict) else {}
    loc = first.get("loc") or first.get("field")
    if isinstance(loc, list):  # pydantic adds the union member it tried: "int", "literal['auto']"
        skip = {"body", "query", "path", "int", "float", "str", "bool", "list", "dict", "none"}
        loc = ".".join(str(x) for x in loc if str(x) not in skip and "[" not in str(x))
    return str(loc) if loc else None


def _error(
    request: Request,
    status: int,
    message: str,
    extra: dict | None = None,
    headers: dict | None = None,
    code: str | None = None,
    params: dict | None = None,
) -> JSONResponse:
    """The error in the protocol's shape, by path (documented in ``openapi.py``)."""
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if request.url.path.startswith("/v2/"):  # KServe / Triton
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    if _openai(request.url.path):
        # OpenAI answers an invalid request 400 (the clients raise BadRequestError), never 422
        status = 400 if status == 422 else status
        kind = {401: "invalid_request_error", 403: "permission_error", 404: "invalid_request_error"}
        body = {
            "error": {
                "message": message,
                "type": kind.get(status, "invalid_request_error"),
                "param": _param(extra) if status == 400 else None,
                "code": {401: "invalid_api_key", 404: "not_found"}.get(status),
            }
        }
        if extra:
            body["error"].update(extra)
    else:
        # code + params: the console says it in the user's language (platform/error_codes.py)
        code = code or error_codes.status_code(status)
        body = {"detail": message, "code": code, "params": params or {}, **(extra or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthFailed)
    async def auth_failed(request: Request, exc: AuthFailed):
        message = (
            "invalid or missing token" if exc.status == 401 else "this token's scope does not allow this"
        )
        return _error(request, exc.status, message, code="invalid_token" if exc.status == 401 else "scope")

    @app.exception_handler(SpecProblems)
    async def spec_problems(request: Request, exc: SpecProblems):
        return _error(request, 422, str(exc), {"problems": exc.problems}, code="invalid_spec")

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        return _error(
            request,
            422,
            str(exc).split("\n")[0],
            {"problems": [p.to_dict() for p in exc.problems]},
            code=error_codes.code_of(exc),
            params=error_codes.params_of(exc),
        )

    @app.exception_handler(TuneforgeError)
    async def tuneforge_error(request: Request, exc: TuneforgeError):
        code, params = error_codes.code_of(exc), error_codes.params_of(exc)
        return _error(request, error_codes.status_of(exc), str(exc), code=code, params=params)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = [
            {
                "loc": list(e["loc"]),
                "msg": e["msg"],
                "type": e["type"],
                "params": error_codes.json_params(e.get("ctx")),
            }
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
        return _error(request, 422, message, {"problems": problems}, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        status, detail, headers = exc.status_code, str(exc.detail), exc.headers
        allow = openapi.allowed_methods(request.app, request.url.path)
        if allow and status in (404, 405) and request.method not in allow.split(", "):
            # an API path asked with another method: Starlette's Allow names its first partial match
            # only, and a GET of a POST-only path falls through to the console's files (a 404)
            status, detail, headers = 405, "Method Not Allowed", {**(headers or {}), "Allow": allow}
        return _error(request, status, detail, headers=headers)


def create_app(
    settings: Settings | None = None, *, executor: Executor | None = None, supervise: bool = True
) -> FastAPI:
    """``supervise=False`` leaves the executor idle (tests of the API alone)."""
    ctx, secret = build_platform(settings, executor)
    ctx.admin_token_created = secret

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if supervise:
            ctx.supervisor.start()
            ctx.deployments.start()
        try:
            yield
        finally:
            from .routes.gateway import close as close_gateway

            if supervise:
                ctx.deployments.stop()
            await close_gateway(ctx)
            ctx.supervisor.stop()
            ctx.executor.shutdown()
            ctx.store.dispose()

    app = FastAPI(
        title="tuneforge",
        version="0.1.0",
        description="Fine-tune and deploy LLMs: datasets, jobs, models, evaluations, tokens.",
        lifespan=lifespan,
    )
    app.state.platform = ctx
    ctx.metrics = RequestMetrics(ctx)
    # the job list and get in front of the routing (hot_reads); added first, it runs inside the metrics
    app.add_middleware(HotReads, ctx=ctx, routes=jobs_routes())
    app.add_middleware(ctx.metrics.middleware)
    app.add_middleware(CurlJsonBodies)  # `curl -d '{...}'` with a bearer token works without -H Content-Type
    install_handlers(app)
    for router in routers():
        app.include_router(router)
    openapi.install(app)
    app.state.api_routes = [r for router in routers() for r in router.routes if isinstance(r, APIRoute)]
    mount_console(app)
    return app


def mount_console(app: FastAPI) -> None:
    """The web console (static files of ``tuneforge.web``) at ``/``, after every API route, so it only
    answers paths no route claims. Mounted last: routes appended by ``routers()`` keep precedence."""
    from importlib.resources import files

    from starlette.staticfiles import StaticFiles

    web = files("tuneforge") / "web"
    if web.is_dir():
        app.mount("/", StaticFiles(directory=str(web), html=True), name="console")
