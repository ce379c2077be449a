"""Command jobs with --workers N (the ranks' variables, one log each, through the API and the CLI) and
queues with a quota (a second job waits while the first holds its queue's CPUs)."""

from __future__ import annotations

import json
import sys

from tests.support.platformhelp import cli_on, make_client, wait_for, wait_state

RANK_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
# Each copy writes the variables it was given and says who it is.
SHOW_RANK = (
    f"import json, os; e = {{k: os.environ.get(k) for k in {RANK_VARS!r}}}; "
    "open(os.path.join(os.environ['TUNEFORGE_OUTPUT_DIR'], 'rank-' + e['RANK'] + '.json'), 'w').write("
    "json.dumps(e)); print('I am rank', e['RANK'], 'of', e['WORLD_SIZE'], flush=True)"
)
# Waits (bounded) for the test's go-ahead file in its output folder.
WAIT_FOR_GO = (
    "import os, time; p = os.path.join(os.environ['TUNEFORGE_OUTPUT_DIR'], 'go'); d = time.time() + 60\n"
    "while not os.path.exists(p) and time.time() < d: time.sleep(0.05)"
)


def test_a_command_job_with_two_workers_sees_the_rank_variables_and_writes_two_logs(monkeypatch):
    with make_client(supervise=True) as client:
        out = cli_on(
            client, monkeypatch, "jobs", "submit", "--name", "ranks", "--workers", "2", "--json", "--",
            sys.executable, "-c", SHOW_RANK,
        )  # fmt: skip
        job = wait_state(client, json.loads(out.stdout)["id"], ("succeeded", "failed"))
        assert job["state"] == "succeeded" and job["workers"] == 2, job
        output = wait_for(lambda: client.get(f"/api/v1/jobs/{job['id']}/files").json()["data"])
        assert {f["path"] for f in output} >= {"output/rank-0.json", "output/rank-1.json"}
        seen = [client.get(f"/api/v1/jobs/{job['id']}/files/output/rank-{r}.json").json() for r in (0, 1)]
        assert [s["RANK"] for s in seen] == ["0", "1"] and [s["LOCAL_RANK"] for s in seen] == ["0", "1"]
        assert {s["WORLD_SIZE"] for s in seen} == {"2"} and seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"]
        assert seen[0]["MASTER_ADDR"] == "127.0.0.1" and int(seen[0]["MASTER_PORT"]) > 0

        rank1 = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 1})
        assert rank1.status_code == 200 and rank1.text == "I am rank 1 of 2\n"
        assert "I am rank 0 of 2" in client.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 0}).text
        assert "I am rank 0 of 2" in client.get(f"/api/v1/jobs/{job['id']}/logs").text  # rank 0 in worker.log
        missing = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 2})
        assert missing.status_code == 404 and "has 2 rank(s), 0…1" in missing.text
        assert cli_on(client, monkeypatch, "jobs", "logs", job["id"], "--rank", "1").stdout == rank1.text


def test_rank_0_of_a_one_worker_job_is_its_log():
    """A one-worker job writes no rank logs: ``?rank=0`` answers its log (it answered an empty page)."""
    with make_client(supervise=True) as client:
        body = {"kind": "command", "name": "one", "command": [sys.executable, "-c", "print('only me')"]}
        job = wait_state(client, client.post("/api/v1/jobs", json=body).json()["id"], ("succeeded", "failed"))
        whole = client.get(f"/api/v1/jobs/{job['id']}/logs")
        rank0 = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 0})
        assert "only me" in whole.text and rank0.text == whole.text
        assert rank0.headers["X-Next-Offset"] == whole.headers["X-Next-Offset"]
        assert client.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 1}).status_code == 404
        # An offset past the file, even past a C long, is an empty page (seek raised: a 500)
        for offset in (2**63 - 1, 10**30):
            page = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 0, "offset": offset})
            assert page.status_code == 200 and page.text == "", page.text
            events = client.get(f"/api/v1/jobs/{job['id']}/events", params={"offset": offset})
            assert events.status_code == 200, events.text


def test_a_queue_quota_holds_the_second_job_queued_while_other_queues_run(monkeypatch):
    monkeypatch.setenv("TUNEFORGE_QUEUES", '{"small": {"cpus": 1}, "big": {"cpus": 4}}')
    monkeypatch.setenv("TUNEFORGE_MAX_CONCURRENT_JOBS", "4")
    with make_client(supervise=True) as client:

        def submit(queue: str | None, code: str = WAIT_FOR_GO, **fields):
            body = {"kind": "command", "name": "q", "command": [sys.executable, "-c", code], **fields}
            return client.post("/api/v1/jobs", json={**body, **({"queue": queue} if queue else {})})

        unknown = submit("nope")
        assert unknown.status_code == 422
        assert "no queue 'nope' on this server; queues: big, small" in unknown.text
        too_big = submit("small", workers=2)
        assert too_big.status_code == 422 and "asks 2 workers; queue 'small' allows 1" in too_big.text

        first, second = (submit("small").json() for _ in range(2))
        other = submit("big", code="print('big')").json()
        assert wait_state(client, other["id"], ("succeeded",))  # started after `second` was passed over
        wait_state(client, first["id"], ("running",))
        assert client.get(f"/api/v1/jobs/{second['id']}").json()["state"] == "queued"
        listing = cli_on(client, monkeypatch, "jobs", "list").stdout
        assert listing.count("small") == 2 and "big" in listing

        from tuneforge.settings import get_settings

        (get_settings().jobs_dir / first["id"] / "output" / "go").write_text("")
        assert wait_state(client, first["id"], ("succeeded", "failed"))["state"] == "succeeded"
        running = wait_state(client, second["id"], ("running", "succeeded", "failed"))
        assert running["queue"] == "small"
        (get_settings().jobs_dir / second["id"] / "output" / "go").write_text("")
        assert wait_state(client, second["id"], ("succeeded", "failed"))["state"] == "succeeded"


def test_a_job_asking_more_gpus_than_the_machine_has_is_refused_with_the_figure():
    with make_client() as client:
        r = client.post("/api/v1/jobs", json={"kind": "command", "name": "g", "command": ["true"], "gpus": 2})
        assert r.status_code == 422 and "asks 2 GPUs, this machine has 0" in r.text
        assert client.get("/api/v1/jobs").json()["data"] == []  # nothing queued, nothing launched
