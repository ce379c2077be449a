"""Each job's answer encoded once per version of its row (platform/job_answers.py, answer_cache.py):
served from the cache while the row is the same, never stale after any write (the API's cancel, resume,
retry and delete, the supervisor's progress copy, a Core update, a new best.json), byte for byte what
FastAPI wrote for JobList and JobOut, and bounded in memory by the bytes it counts."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from pydantic import TypeAdapter

from tests.support.platformhelp import job_row, make_client
from tuneforge.jobs import folder as fmt
from tuneforge.platform import jobs as service
from tuneforge.platform import paging
from tuneforge.platform.answer_cache import AnswerCache, sizeof
from tuneforge.platform.db import Job
from tuneforge.platform.schemas import JobList, JobOut

SELECT = {"metric": "eval_loss", "mode": "min"}
_job_dict = service.job_dict  # the test counts the route's calls of it, not its own
ERROR = {"message": "exited with 1", "exit_code": 1, "log_tail": "Traceback …\nRuntimeError: é ✓"}


def _best(step: int, value) -> dict:
    return {"checkpoint": f"step-{step}", "step": step, "metric": "eval_loss", "mode": "min", "value": value}


def _rows(folder: Path, nan: bool) -> list[dict]:
    """A few jobs with what makes an answer hard to write exactly: non-ASCII text, NaN (PostgreSQL's json
    refuses it), an integer past 64 bits, floats, a log tail, labels, a best checkpoint from best.json."""
    at = time.time() - 100
    specs = {"model": "tiny", "seed": 2**70, "train": {"learning_rate": 1e-05, "select": SELECT}}
    common = dict(step=3, max_steps=10, extra={"labels": {"team": "ü"}})
    return [
        job_row("job-select", folder=str(folder / "job-select"), spec=specs, created_at=at, **common),
        job_row("job-failed", folder=str(folder / "job-failed"), spec={"model": "tiny"}, created_at=at + 1,
                state="failed", exit_code=1, error=ERROR, name="résumé", **common),
        job_row("job-queued", folder=str(folder / "job-queued"), spec={"model": "tiny", "lr": 0.1 + 0.2},
                created_at=at + 2, state="queued", **common),
        job_row("job-done", folder=str(folder / "job-done"), spec={"model": "tiny"}, created_at=at + 3,
                latest_metrics={"loss": float("nan") if nan else None, "eval_loss": 0.5},
                finished_at=at + 50, **common),
    ]  # fmt: skip


def _uncached(ctx, limit: int = 50) -> tuple[bytes, list[bytes]]:
    """The page and each job as the route wrote them before (dicts validated and dumped as FastAPI
    does for response_model), from the database's rows now."""
    page = TypeAdapter(JobList)
    with ctx.store.reading() as s:
        ids = [i for (i,) in s.query(Job.id).order_by(Job.created_at.desc(), Job.id.desc()).all()]
    dicts = [_job_dict(service.get_job(ctx, i)) for i in ids]
    nxt = paging.encode(dicts[limit - 1]["created_at"], ids[limit - 1]) if len(ids) > limit else None
    one = TypeAdapter(JobOut)
    whole = page.dump_json(page.validate_python({"data": dicts[:limit], "next": nxt}), by_alias=True)
    return whole, [one.dump_json(one.validate_python(d), by_alias=True) for d in dicts]


def test_answers_are_kept_per_row_version_and_never_stale(database_url, tmp_path, monkeypatch):
    client = make_client()
    ctx = client.app.state.platform
    (tmp_path / "job-select" / fmt.CHECKPOINTS_DIR / "step-2").mkdir(parents=True)
    (tmp_path / "job-select" / fmt.CHECKPOINTS_DIR / "step-4").mkdir()
    fmt.write_best(tmp_path / "job-select", _best(2, 0.5))
    for name in ("job-failed", "job-queued", "job-done"):
        (tmp_path / name).mkdir()
    with ctx.store.session() as s:
        s.execute(Job.__table__.insert(), _rows(tmp_path, nan=database_url is None))
    made = []
    job_dict = service.job_dict
    monkeypatch.setattr(service, "job_dict", lambda *a: made.append(a[0].id) or job_dict(*a))

    def check(limit: int = 50) -> dict:
        """The cached answers equal the uncached ones byte for byte (list, a page with a cursor, get)."""
        whole, each = _uncached(ctx, limit)
        page = client.get("/api/v1/jobs", params={"limit": limit})
        assert page.status_code == 200 and page.headers["content-type"] == "application/json"
        assert page.content == whole
        for job, expected in zip(page.json()["data"], each, strict=False):
            assert client.get(f"/api/v1/jobs/{job['id']}").content == expected
        return {j["id"]: j for j in page.json()["data"]}

    jobs = check()
    assert jobs["job-select"]["best_checkpoint"] == _best(2, 0.5)
    assert jobs["job-done"]["latest_metrics"] == {"loss": None, "eval_loss": 0.5}
    # the second list and every get were answered from the cache: no job's answer made again
    whole = _uncached(ctx)[0]
    made.clear()
    before = ctx.answers.hits
    assert client.get("/api/v1/jobs").content == whole
    assert client.get("/api/v1/jobs/job-done").status_code == 200
    assert made == [] and ctx.answers.hits == before + 5
    assert ctx.answers.misses == 4 and len(ctx.answers) == 4
    metrics = client.get("/metrics").text
    assert f'tuneforge_answer_cache_answers_total{{result="hit"}} {before + 5}.0' in metrics, metrics
    assert check(limit=2)  # a page with a cursor

    # every way a job changes shows at once
    assert client.post("/api/v1/jobs/job-queued/cancel").status_code == 200
    resumed = client.post("/api/v1/jobs/job-failed/resume", json={})
    assert resumed.status_code == 200, resumed.text
    with ctx.store.session() as s:  # the supervisor's progress copy (ORM) and a Core update
        row = s.get(Job, "job-done")
        row.step, row.latest_metrics = 7, {"loss": 0.25}
        s.execute(Job.__table__.update().where(Job.id == "job-select").values(name="renamed"))
    fmt.write_best(tmp_path / "job-select", _best(4, 0.25))  # no row changed: only the file
    jobs = check()
    assert jobs["job-queued"]["state"] == "cancelled"
    assert jobs["job-failed"]["state"] == "queued" and jobs["job-failed"]["error"] is None
    assert jobs["job-done"]["progress"]["step"] == 7 and jobs["job-done"]["latest_metrics"] == {"loss": 0.25}
    assert jobs["job-select"]["name"] == "renamed" and jobs["job-select"]["best_checkpoint"] == _best(4, 0.25)
    fmt.write_best(tmp_path / "job-select", _best(4, 0.25))  # the file written again, the same record
    made.clear()
    check()
    assert "job-select" not in made
    fmt.write_best(tmp_path / "job-select", _best(4, 1))  # equal to 1.0, but written as 1: answered anew
    assert check()["job-select"]["best_checkpoint"]["value"] == 1
    (tmp_path / "job-select" / fmt.CHECKPOINTS_DIR / "step-4").rmdir()  # what it points at is gone
    assert check()["job-select"]["best_checkpoint"] is None

    assert client.delete("/api/v1/jobs/job-queued").status_code == 200
    with ctx.store.session() as s:  # a new job (a retry's row is one)
        s.execute(Job.__table__.insert(), [job_row("job-new", folder=str(tmp_path / "job-new"))])
    jobs = check()
    assert "job-queued" not in jobs and "job-new" in jobs
    assert client.get("/api/v1/jobs/job-queued").status_code == 404


def test_memory_is_bounded_by_the_bytes_counted_least_recently_used_out_first():
    def version(i: int) -> tuple:  # a job row's values: its spec's text, floats, ints, None
        return (
            f"job-{i:06d}",
            "train",
            f'{{"model": "tiny", "n": {i}, "pad": "{"x" * 1500}"}}',
            i,
            1.5 * i,
            None,
        )

    cache = AnswerCache(max_bytes=400_000)
    answer = b"{" + b"y" * 2300 + b"}"
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            cache.put(f"job-{i:06d}", version(i), b"%d" % i + answer)  # each its own, as each encoding is
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert cache.bytes <= cache.max_bytes and 0 < len(cache) < 1000
    assert 0.9 * cache.bytes <= held <= 1.1 * cache.max_bytes, (held, cache.bytes)  # counted as held
    assert cache.get("job-000999", version(999)) is not None  # the newest are kept
    assert cache.get("job-000000", version(0)) is None  # the oldest went first
    assert cache.get("job-000999", version(998)) is None  # another version of the row is not its answer
    kept = len(cache)
    oldest = 1000 - kept  # read now, so the next one out is the one after it
    assert cache.get(f"job-{oldest:06d}", version(oldest)) is not None
    cache.put("job-001000", version(1000), answer)
    assert cache.get(f"job-{oldest:06d}", version(oldest)) is not None
    assert cache.get(f"job-{oldest + 1:06d}", version(oldest + 1)) is None
    cache.put("job-000999", version(999), b"{}")  # a new version replaces the old, not beside it
    assert (
        len(cache) == kept
        and cache.get("job-000999", version(999)).answer == b"{}"
        and cache.bytes <= cache.max_bytes
    )
    cache.put("job-big", ("job-big",), b"z" * 500_000)  # larger than the whole bound: not kept
    assert cache.get("job-big", ("job-big",)) is None and cache.bytes <= cache.max_bytes
    assert sizeof(version(1)) > 1500
