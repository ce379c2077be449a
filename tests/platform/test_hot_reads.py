"""The job list and get answered in front of FastAPI's routing (platform/hot_reads.py): the good answers
come without the router, and every answer, good or bad, is byte for byte the route's (status, headers,
body) and counted the same in /metrics."""

from __future__ import annotations

import re
import threading
import time

from fastapi.routing import APIRoute, APIRouter
from fastapi.testclient import TestClient

from tests.support.platformhelp import job_row, make_client
from tuneforge.platform import job_answers, paging
from tuneforge.platform.auth import create_token
from tuneforge.platform.db import Job
from tuneforge.platform.hot_reads import HotReads

ERROR = {"message": "exited with 1", "exit_code": 1, "log_tail": "Traceback …\nRuntimeError: é"}
COUNTED = re.compile(r"^tuneforge_http_requests_total(\{.*\}) (\S+)$", re.M)


def _counts(client) -> dict[str, float]:
    return {labels: float(n) for labels, n in COUNTED.findall(client.get("/metrics").text)}


def test_hot_reads_answer_as_the_routes_do_without_the_router(database_url, monkeypatch):
    client = make_client()
    ctx = client.app.state.platform
    now = time.time()
    with ctx.store.session() as s:
        s.execute(
            Job.__table__.insert(),
            [
                job_row("job-a", created_at=now - 2, spec={"model": "tiny", "seed": 2**70}),
                job_row("job-b", created_at=now - 1, state="failed", exit_code=1, error=ERROR, name="résumé"),
                job_row("job-c", created_at=now, state="queued"),
            ],
        )
    _, deployment = create_token(ctx.store, "dep", "deployment:x")
    cursor = paging.encode(now - 1, "job-b")
    admin = dict(client.headers)
    cases = [  # (path, headers): the good ones first, then each way a request goes wrong
        ("/api/v1/jobs", admin),
        ("/api/v1/jobs?state=failed", admin),
        ("/api/v1/jobs?limit=1&kind=train", admin),
        (f"/api/v1/jobs?before={cursor}", admin),
        ("/api/v1/jobs/job-b", admin),
        ("/api/v1/jobs?limit=0", admin),
        ("/api/v1/jobs?state=lost", admin),
        (f"/api/v1/jobs?before={'x' * 201}", admin),
        ("/api/v1/jobs?before=bm90LWEtY3Vyc29y", admin),
        ("/api/v1/jobs/job-nothing", admin),
        ("/api/v1/jobs/code", admin),
        ("/api/v1/jobs/", admin),
        ("/api/v1/jobs", {"Authorization": f"Bearer {deployment}"}),
        ("/api/v1/jobs/job-a", {"Authorization": "Bearer tf_0123456789abcdef_" + "x" * 30}),
        ("/api/v1/jobs", {"Authorization": "Basic eDp5"}),
    ]
    good = 5
    for path, headers in cases:  # each token's row read once (a read the hot path leaves to the route)
        client.get(path, headers=headers)

    routed = []
    router_call = APIRouter.__call__

    async def counted(self, scope, receive, send):
        routed.append(scope["path"])
        await router_call(self, scope, receive, send)

    monkeypatch.setattr(APIRouter, "__call__", counted)

    def answers() -> tuple[list, dict]:
        before = _counts(client)
        got = []
        for path, headers in cases:
            r = client.get(path, headers=headers)
            got.append((path, r.status_code, r.headers.raw, r.content))
        after = _counts(client)
        return got, {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}

    hot, hot_counted = answers()
    assert routed == ["/metrics", *[p.split("?")[0] for p, _ in cases[good:]], "/metrics"], routed
    assert [status for _, status, _, _ in hot] == [200] * good + [
        422,
        422,
        422,
        422,
        404,
        404,
        404,
        403,
        401,
        401,
    ]

    async def fall_through(self, scope):
        return None

    hot_answer = HotReads.answer
    monkeypatch.setattr(HotReads, "answer", fall_through)
    routed.clear()
    routes, routes_counted = answers()
    assert len(routed) == len(cases) + 2
    for mine, theirs in zip(hot, routes, strict=True):
        assert mine == theirs
    assert hot_counted == routes_counted
    assert hot_counted['{method="GET",route="/api/v1/jobs",status="200"}'] == 4
    assert hot_counted['{method="GET",route="/api/v1/jobs/{job_id}",status="200"}'] == 1

    # a read that fails: the server's 500, counted under the route, whichever answers
    def broken(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(job_answers, "job_page", broken)
    failing = TestClient(client.app, raise_server_exceptions=False, headers=admin)
    routed_500 = failing.get("/api/v1/jobs")
    monkeypatch.setattr(HotReads, "answer", hot_answer)
    before = _counts(client)
    hot_500 = failing.get("/api/v1/jobs")
    assert (hot_500.status_code, hot_500.headers.raw, hot_500.content) == (
        routed_500.status_code,
        routed_500.headers.raw,
        routed_500.content,
    )
    assert _counts(client)['{method="GET",route="/api/v1/jobs",status="500"}'] == 2
    assert before['{method="GET",route="/api/v1/jobs",status="500"}'] == 1


def test_no_other_get_route_answers_the_hot_paths():
    """The hot paths skip the route search: only sound while no other GET route matches them."""
    client = make_client()
    hot = HotReads(None, client.app.state.platform, client.app.state.api_routes)
    for route in client.app.state.api_routes:
        if (
            not isinstance(route, APIRoute)
            or "GET" not in route.methods
            or route in (hot.list_route, hot.get_route)
        ):
            continue
        example = re.sub(r"\{[^}]+\}", "x", route.path)
        assert not hot.list_route.path_regex.match(example), route.path
        assert not hot.get_route.path_regex.match(example), route.path


def test_a_hot_read_waiting_for_a_sqlite_connection_leaves_the_event_loop_free():
    """The SQLite SELECT runs on the event loop only while the pool has an idle connection: with every
    connection taken (writers waiting on busy_timeout hold theirs) the checkout waits up to the pool's
    30 s, and on the loop that wait froze every other request of the server with it."""
    client = make_client()
    store = client.app.state.platform.store
    if store.engine.dialect.name != "sqlite":
        return
    pool = store.engine.pool
    held = []
    with client:  # one event loop (the client's portal) for every request below
        client.get("/api/v1/jobs")  # the token's row read, the statement compiled
        while pool.checkedin() or pool.overflow() < pool._max_overflow:
            held.append(store.engine.connect())
        listed = {}
        reader = threading.Thread(target=lambda: listed.update(r=client.get("/api/v1/jobs")))
        reader.start()
        time.sleep(0.3)  # the list waits for a connection
        releaser = threading.Timer(3.0, lambda: [conn.close() for conn in held])
        releaser.start()
        started = time.monotonic()
        other = client.get("/api/v1/no-such-route")
        waited = time.monotonic() - started
        releaser.cancel()  # on the loop-blocking code it has fired already: that request waited for it
        releaser.join()
        for conn in held:
            conn.close()
        reader.join(10)
    assert other.status_code == 404
    assert waited < 1.5, f"another request waited {waited:.1f} s behind the list's connection checkout"
    assert listed["r"].status_code == 200 and listed["r"].json()["data"] == []
