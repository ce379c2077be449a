"""``GET /api/v1/jobs`` and ``GET /api/v1/jobs/{id}``, the reads every console and script polls, answered
in front of FastAPI's routing: the same functions, without the route search and the dependency solving.

A cached page cost a server about 1.4 ms of CPU, of which FastAPI's part (the middleware layers below the
metrics, a search of about forty routes, the router's dependencies solved, the endpoint run) and the hop to
a read thread and back were most. This ASGI layer sits just inside the metrics middleware and answers a
request only when it is the plain good case, reusing every piece the routes use:

- the path is matched by the route's own regex, and the route object goes into the scope, as the router
  puts it there, so the metrics count it under the same template;
- the caller is the deps' ``caller_at_once`` (no database: a token row read moments ago) and must be an
  admin, which is what the jobs router's ``admin`` dependency demands;
- the query parameters are validated by FastAPI's own ``request_params_to_args`` with the route's own
  declarations (pattern, bounds, max length), so there is no second copy of them;
- the answer is ``job_answers``' bytes in the ``Response`` the route returns.

Anything else falls through to FastAPI unchanged, which answers it as before: another method or path, a
token whose row must be read, a missing or non-admin token (401, 403), a parameter that fails validation
(422), an unknown job (404), a cursor that is not one (422), and any error the read raises. The good
answers are byte for byte the routes' (tests/platform/test_hot_reads.py compares them, bad cases too).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from tuneforge.errors import TuneforgeError

from . import job_answers
from .context import Platform
from .deps import caller_at_once
from .read_threads import in_read_thread

LIST_PATH = "/api/v1/jobs"


class HotReads:
    """ASGI middleware (``app.add_middleware(HotReads, ctx=..., routes=...)``, added before the metrics'
    so that it runs inside them)."""

    def __init__(self, app, ctx: Platform, routes: list[APIRoute]):
        from .routes import jobs

        self.app = app
        self.ctx = ctx
        by_endpoint = {r.endpoint: r for r in routes if isinstance(r, APIRoute)}
        self.list_route = by_endpoint[jobs.list_jobs]
        self.get_route = by_endpoint[jobs.get_job]
        assert self.list_route.path == LIST_PATH and self.get_route.path == LIST_PATH + "/{job_id}"
        # SQLite's SELECT is this process's own CPU work (WAL: a reader never waits for a writer), which a
        # read thread would do on the same cores after a hop that costs more than the SELECT; a PostgreSQL
        # answer is a round trip the event loop spends on other requests meanwhile (read_threads).
        # Only while the pool holds an idle connection, though: with every one taken (writers waiting on
        # busy_timeout hold theirs) the checkout waits up to the pool's timeout, which on the loop would
        # freeze every other request; then the read thread waits instead.
        self.inline = ctx.store.engine.dialect.name == "sqlite"
        self.idle_connections = getattr(ctx.store.engine.pool, "checkedin", lambda: 1)  # QueuePool's count
        # the query parameters' values by query string, for the get and the list route (_query_values)
        self.query_values = [_query_values(self.get_route), _query_values(self.list_route)]

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(LIST_PATH)
            and not scope.get("root_path")
        ):
            response = await self.answer(scope)
            if response is not None:
                return await response(scope, receive, send)
        await self.app(scope, receive, send)

    async def answer(self, scope) -> Response | None:
        """The route's answer to a good request; None: FastAPI answers it."""
        path = scope["path"]
        if path == LIST_PATH:
            route, job_id = self.list_route, None
        else:
            match = self.get_route.path_regex.match(path)
            if match is None:
                return None
            route, job_id = self.get_route, match["job_id"]
        request = Request(scope)
        known, who = caller_at_once(request, self.ctx.store)
        if not known or who is None or not who.is_admin:
            return None
        values = self.query_values[job_id is None](scope["query_string"])
        if values is None:
            return None
        if job_id is None:
            read = functools.partial(
                job_answers.job_page,
                self.ctx,
                values["state"],
                values["limit"],
                values["before"],
                values["kind"],
            )
        else:
            read = functools.partial(job_answers.job_answer, self.ctx, job_id)
        # where the router puts the route it chose: the metrics' label, a failed read's 500 included
        scope["route"] = route
        try:
            inline = self.inline and self.idle_connections() > 0
            body = read() if inline else await in_read_thread(read)
        except TuneforgeError:  # not found, a cursor that is not one: the route's error handlers answer
            return None
        return Response(body, media_type="application/json")


MAX_KEPT_QUERY = 512  # bytes: a longer query string is validated each time, never kept


def _query_values(route: APIRoute) -> Callable[[bytes], dict | None]:
    """A function of a query string: the route's query parameters, validated by FastAPI as the route would
    be (None: not valid, the route answers the 422). Its values for recent query strings are kept: the
    validation was a fifth of a hot answer's CPU, and clients poll the same few query strings (a walk by
    cursor adds one a page: the bound holds them)."""

    def validated(query_string: bytes) -> dict | None:
        values, errors = request_params_to_args(route.dependant.query_params, QueryParams(query_string))
        return None if errors else values

    kept = functools.lru_cache(maxsize=1024)(validated)
    return lambda query_string: (
        validated(query_string) if len(query_string) > MAX_KEPT_QUERY else kept(query_string)
    )
