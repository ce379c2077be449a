"""Asynchronous model pulls/imports: 202 at once, progress from the worker's --progress-file, one per name,
a bound on how many run, and the error of a failed one. (A real pull needs the package index, so the
successful path is an import of a tiny model through the same background worker.)"""

from __future__ import annotations

import json
import time

from tests.support.platformhelp import make_client


def _wait(client, pull_id: str, timeout: float = 60.0) -> tuple[dict, set]:
    """Poll a pull until it ends; its last answer and the stages seen on the way."""
    stages = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/models/pulls/{pull_id}")
        assert r.status_code == 200, r.text
        pull = r.json()
        stages.add(pull["stage"])
        if pull["state"] != "running":
            return pull, stages
        time.sleep(0.1)
    raise AssertionError(f"pull {pull_id} still running after {timeout}s: {pull}")


def test_async_import_dedupes_bounds_and_reports(tiny_llama):
    client = make_client(max_pulls=1)
    folder = tiny_llama

    body = {"path": str(folder), "name": "tiny-async", "wait": False}
    r = client.post("/api/v1/models/import", json=body)
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["state"] == "running" and started["name"] == "tiny-async" and started["model"] is None

    # The same import while it runs is the same pull; another one is over the bound (1 here): 503.
    again = client.post("/api/v1/models/import", json=body)
    assert again.status_code == 202 and again.json()["id"] == started["id"]
    over = client.post("/api/v1/models/pull", json={"name": "no-such-model", "wait": False})
    assert over.status_code == 503
    assert "running" in over.json()["detail"] and "tiny-async" in over.json()["detail"]
    assert [p["id"] for p in client.get("/api/v1/models/pulls").json()["data"]] == [started["id"]]

    done, stages = _wait(client, started["id"])
    assert done["state"] == "succeeded", done
    assert done["error"] is None and done["model"]["name"] == "tiny-async"
    assert done["model"]["architecture"] == "LlamaForCausalLM"
    assert "copy" in stages  # read from the worker's progress file
    assert not list((client.app.state.platform.home / "pulls").iterdir())  # the progress file is gone
    names = [m["name"] for m in client.get("/api/v1/models").json()["data"]]
    assert "tiny-async" in names

    # The slot is free again; a failing pull ends failed with the worker's message. A name that looks
    # like an option stays a name (the worker gets it after "--").
    r = client.post("/api/v1/models/pull", json={"name": "--help", "wait": False})
    assert r.status_code == 202, r.text
    failed, _ = _wait(client, r.json()["id"])
    assert failed["state"] == "failed" and failed["model"] is None
    assert "no model called '--help'" in failed["error"] and "smollm2-135m-instruct" in failed["error"]


def test_waiting_pull_answers_as_before_and_unknown_pull_is_404():
    client = make_client()
    r = client.post("/api/v1/models/pull", json={"name": "no-such-model"})
    assert r.status_code == 422 and "no model called 'no-such-model'" in r.json()["detail"]
    assert client.post("/api/v1/models/pull", json={"name": "a\u0000b"}).status_code == 422
    assert client.get("/api/v1/models/pulls/pull-nope").status_code == 404
    # waited-for pulls go through the same registry (one worker per model, a few at most): listed too
    listed = client.get("/api/v1/models/pulls").json()["data"]
    assert [(p["name"], p["state"]) for p in listed] == [("a\u0000b", "failed"), ("no-such-model", "failed")]


def test_progress_lines_are_throttled_and_end_on_each_stage_last_state(tmp_path):
    from tuneforge.cli.common import progress_lines
    from tuneforge.platform.pulls import last_progress

    path = tmp_path / "p.jsonl"
    with progress_lines(path, every=10.0) as update:
        for i in range(1, 1001):
            update("download", i * 10, None)  # no total: only throttling ends lines
        update("extract", 0, 100)
        for i in range(1, 101):
            update("extract", i, 100)
        update("convert", None, None)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [
        {"stage": "download", "done": 10, "total": None},
        {"stage": "download", "done": 10000, "total": None},  # the stage's last state, before the next
        {"stage": "extract", "done": 0, "total": 100},
        {"stage": "extract", "done": 100, "total": 100},  # finished is always written
        {"stage": "convert", "done": None, "total": None},
    ]
    assert last_progress(path) == lines[-1]
    with open(path, "a") as fh:
        fh.write('{"stage": "ha')  # the worker is mid-line: the last whole line is read
    assert last_progress(path) == lines[-1]
    assert last_progress(tmp_path / "missing.jsonl") is None


def test_a_progress_line_nested_past_the_parser_is_skipped(tmp_path):
    """Pulls and exports read their worker's progress file: a line of 4,000 ``[`` (RecursionError in
    json.loads) is skipped like a corrupt one and the last good stage is reported."""
    from tuneforge.platform.pulls import last_progress

    path = tmp_path / "progress.jsonl"
    path.write_text('{"stage": "load", "done": 1, "total": 2}\n' + "[" * 4000 + "\n")
    assert last_progress(path) == {"stage": "load", "done": 1, "total": 2}
