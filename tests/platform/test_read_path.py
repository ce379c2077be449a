"""The job list and get, the reads every console and script polls (issue 20: their server CPU per request):
no worker-thread hop on SQLite, no BaseHTTPMiddleware, a job's best.json opened only when its spec
asks train.select to write one, and the JSON columns read exactly as ``json.loads`` reads them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio.to_thread
from starlette.middleware.base import BaseHTTPMiddleware

from tests.support.platformhelp import job_row, make_client
from tuneforge.jobs import folder as fmt
from tuneforge.platform.db import Job, load_json

SELECT = {"metric": "eval_loss", "mode": "min"}
BEST = {"checkpoint": "step-2", "step": 2, "metric": "eval_loss", "mode": "min", "value": 0.5}


def _row(job_id: str, folder: Path, spec: dict, at: float, **fields) -> dict:
    return job_row(
        job_id, folder=str(folder), spec=spec, created_at=at, step=3, max_steps=3,
        latest_metrics={"loss": 1.25}, extra={"labels": {"team": "a"}}, **fields,
    )  # fmt: skip


def test_list_and_get_take_no_thread_hop_and_read_best_json_only_for_select(tmp_path, monkeypatch):
    client = make_client()
    app = client.app
    assert not any(m.cls is BaseHTTPMiddleware for m in app.user_middleware)
    selected, plain = tmp_path / "job-selected", tmp_path / "job-plain"
    (selected / fmt.CHECKPOINTS_DIR / "step-2").mkdir(parents=True)
    fmt.write_best(selected, BEST)
    plain.mkdir()
    fmt.write_best(plain, BEST)  # not the worker's (no train.select): never read, as no worker writes it
    # numbers json reads exactly and orjson would not (past 64 bits), and what only json reads (NaN)
    big = {"model": "tiny", "seed": 2**70, "low": -(2**63) - 1}
    error = {"message": "exited with 1", "exit_code": 1, "log_tail": "Traceback …\nRuntimeError: é"}
    now = time.time()
    rows = [
        _row("job-selected", selected, {"model": "tiny", "train": {"select": SELECT}}, now),
        _row("job-plain", plain, big, now - 1, state="failed", exit_code=1, error=error),
    ]
    with app.state.platform.store.session() as s:
        s.execute(Job.__table__.insert(), rows)
        s.execute(Job.__table__.update().values(latest_metrics={"loss": float("nan"), "step": 3}).where(
            Job.__table__.c.id == "job-plain"))  # fmt: skip
    assert client.get("/api/v1/jobs").status_code == 200  # the token's row is read (a hop of its own)

    hops, opened = [], []
    run_sync, read_best = anyio.to_thread.run_sync, fmt.read_best

    async def counted(func, *args, **kwargs):
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    monkeypatch.setattr(fmt, "read_best", lambda root: opened.append(Path(root).name) or read_best(root))
    page = client.get("/api/v1/jobs")
    assert page.status_code == 200, page.text
    # was 4: the route, its answer's validation, and two dependencies; then 1 (a read thread); on SQLite
    # now none (hot_reads: the SELECT on the event loop)
    assert hops == [], hops
    assert opened == ["job-selected"]
    one = client.get("/api/v1/jobs/job-plain")
    assert one.status_code == 200 and hops == [], hops

    listed = {j["id"]: j for j in page.json()["data"]}
    assert listed["job-selected"]["best_checkpoint"] == BEST
    assert listed["job-plain"]["best_checkpoint"] is None
    assert one.json() == listed["job-plain"]
    assert one.json()["spec"] == big and json.loads(one.content)["spec"]["seed"] == 2**70
    assert one.json()["error"] == error and one.json()["labels"] == {"team": "a"}
    assert one.json()["latest_metrics"] == {"loss": None, "step": 3}  # pydantic writes NaN as null
    assert client.get("/api/v1/jobs/job-nothing").status_code == 404
    metrics = client.get("/metrics").text
    counted = 'tuneforge_http_requests_total{method="GET",route="/api/v1/jobs/{job_id}",status="404"} 1.0'
    assert counted in metrics


def test_json_columns_read_as_json_reads_them():
    texts = [
        json.dumps({"model": "tiny", "train": {"learning_rate": 1e-05, "epochs": 3.0, "select": None}}),
        "9223372036854775807",
        "-9223372036854775809",
        "18446744073709551616",
        "[NaN, Infinity, -Infinity]",
        '"\\ud800"',
        "1e400",
        '{"a": 1, "a": 2}',
        '"\\u00e9 1234567890123456789012"',
        json.dumps({"log_tail": "é" * 3 + "0" * 30}, ensure_ascii=False),
    ]
    for text in texts:
        for value in (text, text.encode()):
            assert repr(load_json(value)) == repr(json.loads(value)), text


def test_list_and_get_send_one_statement_outside_a_transaction(database_url):
    """Each read is its one SELECT, with no BEGIN/COMMIT around it: on PostgreSQL those were two more
    round trips a request (ping, BEGIN, SELECT, COMMIT); on SQLite two more statements."""
    from sqlalchemy import event

    client = make_client()
    store = client.app.state.platform.store
    with store.session() as s:
        s.execute(Job.__table__.insert(), [job_row("job-one", created_at=time.time())])
    assert client.get("/api/v1/jobs").status_code == 200  # the token's row is read (and cached) here
    sent = []

    def in_transaction(dbapi) -> bool:
        if store.engine.dialect.name == "sqlite":
            return dbapi.in_transaction
        return dbapi.info.transaction_status != 0  # psycopg's TransactionStatus.IDLE

    def after(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement.split()[0].upper(), in_transaction(conn.connection.dbapi_connection)))

    event.listen(store.engine, "after_cursor_execute", after)
    commits = []
    event.listen(store.engine, "commit", lambda conn: commits.append(conn))
    try:
        assert client.get("/api/v1/jobs").json()["data"][0]["id"] == "job-one"
        assert client.get("/api/v1/jobs/job-one").json()["id"] == "job-one"
    finally:
        event.remove(store.engine, "after_cursor_execute", after)
    assert sent == [("SELECT", False), ("SELECT", False)], sent
    assert commits == []
    # the store's sessions still open their transactions (a write takes SQLite's lock at BEGIN)
    with store.session() as s:
        s.execute(Job.__table__.update().values(state="failed").where(Job.__table__.c.id == "job-one"))
        assert in_transaction(s.connection().connection.dbapi_connection)
    assert client.get("/api/v1/jobs/job-one").json()["state"] == "failed"
