"""Jobs through the control plane with real `tuneforge train` workers on a tiny model (SQLite).

Each worker is a real process (import of torch + transformers: a few seconds), so these tests batch
several checks on one job.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.conftest import MEMO
from tests.support.platformhelp import make_client, store_model, upload, wait_for, wait_state

FAST = {
    "data.max_len": 64,
    "lora.dropout": 0.0,
    "train.learning_rate": 1e-2,
    "train.logging_steps": 1,
    "train.warmup_ratio": 0.0,
    "train.scheduler": "constant",
}


@pytest.fixture
def server(tiny_llama, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_MAX_CONCURRENT_JOBS", "2")
    store_model(tiny_llama, "tiny")
    with make_client(supervise=True, cancel_grace_s=20.0) as client:
        assert upload(client, "memo.json", json.dumps(MEMO * 2), name="memo").status_code == 201
        yield client


def _create(client, **overrides) -> dict:
    body = {"template": "sft-lora", "model": "tiny", "datasets": ["memo"], "overrides": {**FAST, **overrides}}
    restart = overrides.pop("_restart", None)
    body["overrides"].pop("_restart", None)
    if restart:
        body.update(restart_policy="on-failure", max_retries=restart)
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _events(client, job_id) -> list[dict]:
    return client.get(f"/api/v1/jobs/{job_id}/events").json()["data"]


def _pid(client, job_id) -> int:
    from tuneforge.platform.db import Job

    with client.app.state.platform.store.session() as s:
        return s.get(Job, job_id).pid


def test_job_runs_follows_registers_and_evaluates(server, monkeypatch):
    job = _create(server, **{"train.max_steps": 4, "train.save_steps": 2})
    # Token statistics and the masked preview come from a worker process, after the upload answered.
    monkeypatch.setenv("TUNEFORGE_DEFAULT_MODEL", "tiny")
    server.app.state.platform.token_stats = True
    chat = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "banana seven"}]}
    ]
    ds = server.post("/api/v1/datasets", json={"name": "chat", "records": chat}).json()
    assert ds["state"] == "ready" and ds["token_stats"] is None
    # Follow the log as Server-Sent Events until the job ends.
    text, ended = "", None
    with server.stream("GET", f"/api/v1/jobs/{job['id']}/logs", params={"follow": "true"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "log":
                    text += data["data"]
                elif event == "end":
                    ended = data["state"]
                    break
    assert ended == "succeeded", text
    assert "--- attempt 1" in text and "loss=" in text
    done = server.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and done["progress"] == {"step": 4, "max_steps": 4}
    assert done["exit_code"] == 0 and done["latest_metrics"]["loss"] > 0
    kinds = [e["event"] for e in _events(server, job["id"])]
    assert kinds[:3] == ["queued", "launched", "started"] and kinds[-1] == "finished"
    assert kinds.count("checkpoint_saved") == 2 and "training" in kinds
    metrics = server.get(f"/api/v1/jobs/{job['id']}/metrics", params={"limit": 2}).json()
    assert [m["step"] for m in metrics["data"]] == [1, 2]
    rest = server.get(f"/api/v1/jobs/{job['id']}/metrics", params={"offset": metrics["next_offset"]}).json()
    assert [m["step"] for m in rest["data"] if "loss" in m][:2] == [3, 4]
    ckpts = server.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step"] for c in ckpts] == [2, 4] and all(c["train_loss"] > 0 for c in ckpts)
    files = {f["path"] for f in server.get(f"/api/v1/jobs/{job['id']}/files").json()["data"]}
    assert {"spec.yaml", "final/adapter_config.json", "metrics.jsonl", "worker.log"} <= files
    spec = server.get(f"/api/v1/jobs/{job['id']}/files/spec.yaml").text
    assert "max_steps: 4" in spec
    assert yaml.safe_load(spec) == done["spec"]  # the worker ran the server's resolved file as it is

    got = wait_for(lambda: server.get(f"/api/v1/datasets/{ds['id']}").json()["token_stats"], what="tokens")
    assert got["unit"] == "tokens" and got["trained_tokens"] > 0
    masked = server.get(f"/api/v1/datasets/{ds['id']}/preview").json()["masked"][0]
    trained = "".join(p["text"] for p in masked if p["trained"])
    assert "banana seven" in trained and "hi" not in trained  # the loss is on the answer only

    # Register the final output and a checkpoint: two versions of one name, with lineage.
    v1 = server.post("/api/v1/models/register", json={"job": job["id"], "name": "memo-lora"}).json()
    v2 = server.post(
        "/api/v1/models/register", json={"job": job["id"], "name": "memo-lora", "checkpoint": "step-2"}
    ).json()
    assert (v1["version"], v2["version"]) == (1, 2) and v1["base_model"] == "tiny"
    assert v1["lineage"]["datasets"] == [server.get("/api/v1/datasets/memo").json()["id"]]
    assert v2["lineage"]["metrics"]["step"] == 2
    bad = server.post("/api/v1/models/register", json={"job": job["id"], "name": "x", "checkpoint": "step-3"})
    assert bad.status_code == 404 and "step-2" in bad.text
    assert server.delete(f"/api/v1/jobs/{job['id']}").status_code == 409  # its outputs are registered

    # Evaluate the registered model against its base, as a worker job.
    ev = server.post(
        "/api/v1/evaluations",
        json={
            "model": "memo-lora@1",
            "dataset": "memo",
            "compare_base": True,
            "max_samples": 2,
            "max_new_tokens": 4,
        },
    ).json()
    wait_state(server, ev["job"], ("succeeded", "failed"))
    got = server.get(f"/api/v1/evaluations/{ev['id']}").json()
    assert got["state"] == "succeeded", got
    assert len(got["metrics"]) == 2 and all(m["samples"] == 2 for m in got["metrics"].values())
    preds = server.get(f"/api/v1/evaluations/{ev['id']}/predictions").json()["data"]
    assert len(preds) == 2 and "prediction" in preds[0] and "prediction_base" in preds[0]


def test_sigkill_of_a_worker_fails_with_log_tail_and_on_failure_resumes(server):
    plain = _create(server, **{"train.max_steps": 400, "train.save_steps": 1000})
    # Killed at its first checkpoint (step 10) with 70 steps (~1 s idle) left: the 0.2 s poll sees it in time.
    retried = _create(server, **{"train.max_steps": 80, "train.save_steps": 10, "_restart": 1})
    folder = Path(server.app.state.platform.jobs_dir)
    wait_for(lambda: server.get(f"/api/v1/jobs/{plain['id']}").json()["progress"]["step"] >= 1, what="step 1")
    os.killpg(_pid(server, plain["id"]), signal.SIGKILL)
    failed = wait_state(server, plain["id"], ("failed",), timeout=30)
    assert failed["error"]["exit_code"] == 128 + signal.SIGKILL
    assert "signal 9" in failed["error"]["message"]
    assert "loss=" in failed["error"]["log_tail"]  # the worker's last output, not an empty string

    checkpoints = folder / retried["id"] / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("step-*/trainer_state.json")), what="a first checkpoint")
    os.killpg(_pid(server, retried["id"]), signal.SIGKILL)
    done = wait_state(server, retried["id"], ("succeeded", "failed"), timeout=600)
    assert done["state"] == "succeeded" and done["attempt"] == 2, done
    events = _events(server, retried["id"])
    restarting = [e for e in events if e["event"] == "restarting"]
    assert len(restarting) == 1 and restarting[0]["attempt"] == 2
    started = [e for e in events if e["event"] == "started"]
    assert started[0]["resumed_from"] is None and started[1]["resumed_from"] is not None
    assert done["progress"]["step"] == 80


def test_cancel_stops_the_worker_with_a_checkpoint_then_resume(server):
    job = _create(server, **{"train.max_steps": 400, "train.save_steps": 1000})
    wait_for(lambda: server.get(f"/api/v1/jobs/{job['id']}").json()["progress"]["step"] >= 2, what="step 2")
    assert server.post(f"/api/v1/jobs/{job['id']}/cancel").json()["state"] == "running"
    cancelled = wait_state(server, job["id"], ("cancelled", "failed", "succeeded"), timeout=60)
    assert cancelled["state"] == "cancelled", cancelled
    kinds = [e["event"] for e in _events(server, job["id"])]
    assert "cancel_requested" in kinds and kinds[-1] == "cancelled"
    ckpts = server.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert len(ckpts) == 1  # SIGTERM saved one at the step boundary
    assert server.post(f"/api/v1/jobs/{job['id']}/resume", json={"checkpoint": "step-999"}).status_code == 404
    name = ckpts[0]["name"]
    resumed = server.post(f"/api/v1/jobs/{job['id']}/resume", json={"checkpoint": name}).json()
    assert resumed["state"] == "queued" and resumed["resume_from"] == name

    def restarted():
        started = [e for e in _events(server, job["id"]) if e["event"] == "started"]
        return len(started) == 2 and started[-1]

    assert wait_for(restarted, what="second start")["resumed_from"] == name
    resolved = server.get(f"/api/v1/jobs/{job['id']}/files/spec.yaml").text
    assert yaml.safe_load(resolved) == server.get(f"/api/v1/jobs/{job['id']}").json()["spec"]
    server.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert wait_state(server, job["id"], ("cancelled",), timeout=60)["attempt"] == 2
