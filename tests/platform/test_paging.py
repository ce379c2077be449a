"""Keyset pagination of the newest-first lists (platform/paging.py) on SQLite and PostgreSQL: every row
once in a stable order while new rows arrive, a cursor that is not one of ours is a 422, and each page
is an index range (no scan of the table, no sort) for the lists and filters the API offers."""

from __future__ import annotations

import base64
import time

import pytest
from sqlalchemy import select, text

from tests.support.platformhelp import job_row, make_client
from tuneforge.platform import paging
from tuneforge.platform.db import Dataset, Evaluation, Job

ROWS = 300


def _jobs(n: int, start: float, prefix: str) -> list[dict]:
    """Rows inserted in one statement (the API would take minutes for hundreds). Every third pair shares
    its creation time, so the id has to break ties; few are evals and none runs (PostgreSQL's planner
    takes a filter's own index only for a value that is rare, as running jobs are among thousands)."""
    return [
        job_row(
            f"job-{prefix}{i:05d}",
            kind="eval" if i % 30 == 0 else "train",
            state=("succeeded", "failed", "queued")[i % 3],
            created_at=start + (i - i % 2 * (i % 3 == 0)),
        )
        for i in range(n)
    ]


def _walk(client, limit: int, **params) -> list[str]:
    ids, before = [], None
    while True:
        r = client.get(
            "/api/v1/jobs", params={"limit": limit, **params, **({"before": before} if before else {})}
        )
        assert r.status_code == 200, r.text
        page = r.json()
        ids += [j["id"] for j in page["data"]]
        if not page["next"]:
            return ids
        before = page["next"]


@pytest.fixture
def filled(database_url):
    with make_client() as client:
        store = client.app.state.platform.store
        with store.session() as s:
            s.execute(Job.__table__.insert(), _jobs(ROWS, 1000.0, "a"))
        yield client, store


def test_pages_hold_every_job_once_newest_first_while_new_jobs_arrive(filled):
    client, store = filled
    expected = _newest(store)
    first = client.get("/api/v1/jobs", params={"limit": 37}).json()
    # jobs created while a client walks the list sort before its cursor: no page shifts, none repeats
    with store.session() as s:
        s.execute(Job.__table__.insert(), _jobs(20, time.time(), "b"))
    seen = [j["id"] for j in first["data"]] + _walk_from(client, 37, first["next"])
    assert seen == expected and len(set(seen)) == ROWS
    # a filter pages the same way: exactly the failed ones, in the same order
    failed = _walk(client, 25, state="failed")
    with store.reading() as s:
        states = dict(s.execute(select(Job.id, Job.state)).all())
    assert failed == [i for i in _newest(store) if states[i] == "failed"]
    # a page that ends the list says so (no empty page after an exact multiple)
    assert client.get("/api/v1/jobs", params={"limit": ROWS + 20}).json()["next"] is None


def test_datasets_and_evaluations_page_the_same_way(filled):
    client, store = filled
    datasets = [
        dict(
            id=f"ds-{i:04d}",
            name=f"d{i}",
            state="invalid",
            records=0,
            bytes=0,
            meta={},
            problems=[],
            created_at=2000.0 + i // 2,
        )
        for i in range(40)
    ]
    evals = [
        dict(
            id=f"eval-{i:04d}",
            job_id=f"job-a{i:05d}",
            model="tiny",
            dataset="d0",
            compare_base=False,
            created_at=3000.0 + i // 2,
        )
        for i in range(30)
    ]
    with store.session() as s:
        s.execute(Dataset.__table__.insert(), datasets)
        s.execute(Evaluation.__table__.insert(), evals)
    for path, rows, limit in (("/api/v1/datasets", datasets, 7), ("/api/v1/evaluations", evals, 9)):
        seen, before = [], None
        while True:
            r = client.get(path, params={"limit": limit, **({"before": before} if before else {})})
            assert r.status_code == 200, r.text
            seen += [d["id"] for d in r.json()["data"]]
            if not (before := r.json()["next"]):
                break
        assert seen == [d["id"] for d in sorted(rows, key=lambda d: (d["created_at"], d["id"]), reverse=True)]
        assert client.get(path, params={"before": "1.5_x"}).status_code == 422


def _walk_from(client, limit: int, before: str) -> list[str]:
    ids = []
    while before:
        page = client.get("/api/v1/jobs", params={"limit": limit, "before": before}).json()
        ids += [j["id"] for j in page["data"]]
        before = page["next"]
    return ids


def _newest(store) -> list[str]:
    with store.reading() as s:
        return list(s.scalars(select(Job.id).order_by(Job.created_at.desc(), Job.id.desc())))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_cursor_that_is_not_ours_is_a_422_that_says_so(filled):
    client, _ = filled
    forged = [
        "1000.5_job-a00001",  # the format before the cursor became opaque
        "not base64 at all!",
        _b64(b"\xff\xfe"),
        _b64(b'{"created_at": 1, "id": "job-x"}'),
        _b64(b'[NaN, "job-x"]'),
        _b64(b'[1e999, "job-x"]'),
        _b64(b'[true, "job-x"]'),
        _b64(b'[1, "job-x\'; DROP TABLE jobs; --"]'),
        _b64(b"[1, 2]"),
        _b64(b'[1, "job-x", 3]'),
    ]
    for cursor in forged:
        r = client.get("/api/v1/jobs", params={"before": cursor})
        assert r.status_code == 422, (cursor, r.text)
        assert "not a cursor a page of this list handed out" in r.json()["detail"], r.text
    # longer than any cursor we write: refused before it is decoded
    assert client.get("/api/v1/jobs", params={"before": "A" * 10_000}).status_code == 422
    # a well-formed cursor is a position, nothing more: it selects no row outside the list's filter
    page = client.get("/api/v1/jobs", params={"state": "failed", "before": paging.encode(1e12, "zzz")})
    assert page.status_code == 200 and {j["state"] for j in page.json()["data"]} == {"failed"}


def _plan(store, query) -> str:
    """The database's plan for ``query``; on PostgreSQL with scans and sorts priced out, so that a plan
    without an index scan or with a Sort means no index can serve the page (the table is small)."""
    sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            return "\n".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        conn.execute(text("SET enable_seqscan = off"))
        conn.execute(text("SET enable_sort = off"))
        conn.execute(text("ANALYZE"))
        return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))


def test_each_page_is_an_index_range_without_a_sort(filled):
    _, store = filled
    cursor = paging.encode(1100.0, "job-a00100")
    lists = {
        "ix_jobs_created": select(Job),
        "ix_jobs_state_created": select(Job).where(Job.state == "running"),
        "ix_jobs_kind_created": select(Job).where(Job.kind == "eval"),
        "ix_datasets_created": select(Dataset),
        "ix_evaluations_created": select(Evaluation).join(Job, Job.id == Evaluation.job_id),
    }
    for index, query in lists.items():
        table = Evaluation if index == "ix_evaluations_created" else Dataset if "datasets" in index else Job
        plan = _plan(store, paging.newest_first(query, table, 50, cursor))
        assert index in plan, plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan and "SCAN jobs" not in plan, plan


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_page_of_jobs_and_a_job_cost_one_query_each(filled):
    """No query per row, and none for the caller's token once it was read (auth.TOKEN_CACHE_S); a
    revoked token still fails on its next request."""
    from sqlalchemy import event

    client, store = filled
    selects: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    client.get("/api/v1/jobs")  # the token is read here
    event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert len(client.get("/api/v1/jobs", params={"limit": 100}).json()["data"]) == 100
        assert len(selects) == 1, selects
        assert client.get("/api/v1/jobs/job-a00007").status_code == 200
        assert len(selects) == 2, selects
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    other = client.post("/api/v1/tokens", json={"name": "other"}).json()
    headers = {"Authorization": f"Bearer {other['token']}"}
    assert client.get("/api/v1/jobs/job-a00007", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/tokens/{other['id']}").status_code == 200
    assert client.get("/api/v1/jobs/job-a00007", headers=headers).status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dataset_list_in_step_with_the_store_takes_no_write_lock(filled):
    """The list syncs the index with the store on disk; when nothing changed it only reads (on SQLite a
    write transaction queued every list behind every writer)."""
    from sqlalchemy import event

    from tests.support.platformhelp import upload

    client, store = filled
    upload(client, "memo.json", '[{"instruction": "a", "input": "", "output": "b"}]', name="memo")
    assert [d["name"] for d in client.get("/api/v1/datasets").json()["data"]] == ["memo"]
    writes: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("BEGIN IMMEDIATE", "INSERT", "UPDATE", "DELETE")):
            writes.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert [d["name"] for d in client.get("/api/v1/datasets").json()["data"]] == ["memo"]
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert writes == []
