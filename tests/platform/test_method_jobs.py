"""KTO and GRPO jobs through the control plane, as a user of the API runs them: each trains (real `tuneforge
train` workers, tiny model, two steps), its method's metrics come back from the API and the CLI and are in
its TensorBoard file, and both results register and deploy on one worker (the KTO adapter by default, the
GRPO one beside it) and answer a chat. A reward model on the same server: test_reward_models.py (kind
``reward``, refused for chat) on the folder layout rm.py writes; a real rm-lora job through the API did the
same when this was written, but a third worker costs more than the suite's time allows."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.paths import FIXTURES
from tests.support.platformhelp import cli_on, make_client, store_model, upload, wait_for, wait_state

QUESTIONS = [("What is the capital of France?", "Paris", "banana"), ("Count to three.", "one two", "dog")]
FEEDBACK = [
    {"prompt": q, "completion": answer, "label": label}
    for q, good, bad in QUESTIONS
    for answer, label in ((good, True), (bad, False))
]
SUMS = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(4)]
COMMON = {
    "train.max_steps": 2,
    "train.batch_size": 4,
    "train.logging_steps": 1,
    "train.warmup_ratio": 0.0,
    "data.max_len": 64,
    "lora.dropout": 0.0,
}
# Two rewards (a metric per function), a KL term (beta > 0) and short completions.
GRPO = {
    "grpo.rewards": ["exact_match", {"length": 4, "weight": 0.5}],
    "grpo.num_generations": 2,
    "grpo.max_completion_length": 4,
    "grpo.beta": 0.1,
}
JOBS = {"kto": ("kto-lora", "feedback", {}), "grpo": ("grpo-lora", "sums", GRPO)}
# What each method logs beside the loss, as the console charts it (web/js/method_charts.js).
METHOD_METRICS = {
    "kto": {"rewards/chosen", "rewards/rejected", "rewards/margins", "kl"},
    "grpo": {"rewards/exact_match/mean", "rewards/length/mean", "reward", "kl", "completions/mean_length"},
}


def _tensorboard_tags(api, job_id: str) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tuneforge.jobs.folder import TENSORBOARD_DIR
    from tuneforge.platform.db import Job

    with api.app.state.platform.store.session() as s:
        folder = Path(s.get(Job, job_id).folder)
    acc = EventAccumulator(str(folder / TENSORBOARD_DIR))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def _check_cli_columns(api, monkeypatch, ids: dict, logged: dict) -> None:
    """`tuneforge jobs metrics` shows the method's main figures beside the loss; --keys picks any."""
    from typer.testing import CliRunner

    from tuneforge.cli.jobs import _metric_columns
    from tuneforge.cli.main import app
    from tuneforge.errors import ConfigError

    assert _metric_columns(logged["kto"])[5:] == ["rewards/margins", "kl"]  # after step … grad_norm
    assert _metric_columns(logged["grpo"])[5:] == [
        "kl", "reward", "rewards/exact_match/mean", "rewards/length/mean", "completions/mean_length",
    ]  # fmt: skip
    rm = [json.loads(line) for line in (FIXTURES / "method_metrics" / "rm.jsonl").read_text().splitlines()]
    assert _metric_columns(rm)[5:] == ["accuracy", "margin"]  # a reward model's run, as rm.py logged it
    keys = ["--keys", "step,rewards/length/mean", "--json"]
    picked = json.loads(cli_on(api, monkeypatch, "jobs", "metrics", ids["grpo"], *keys).stdout)
    assert [set(r) for r in picked[:2]] == [{"step", "rewards/length/mean"}] * 2, picked
    wrong = CliRunner().invoke(app, ["jobs", "metrics", ids["kto"], "--keys", "step,rewards/nope"])
    assert isinstance(wrong.exception, ConfigError), wrong.output
    assert f"job {ids['kto']} logged no rewards/nope; it logged step, epoch" in str(wrong.exception)


def test_kto_and_grpo_jobs_report_their_metrics_register_deploy_and_chat(tiny_llama, monkeypatch):
    store_model(tiny_llama, "tiny")
    with make_client(supervise=True) as api:
        for name, rows in (("feedback", FEEDBACK), ("sums", SUMS)):
            assert upload(api, f"{name}.json", json.dumps(rows), name=name).status_code == 201
        ids, logged = {}, {}
        for method, (template, dataset, overrides) in JOBS.items():
            body = {"template": template, "model": "tiny", "datasets": [dataset]}
            r = api.post("/api/v1/jobs", json={**body, "overrides": {**COMMON, **overrides}})
            assert r.status_code == 201, r.text
            ids[method] = r.json()["id"]
        for method, job_id in ids.items():
            job = wait_state(api, job_id, ("succeeded", "failed", "cancelled"), timeout=300)
            assert job["state"] == "succeeded", (method, job.get("error"))
            logged[method] = api.get(f"/api/v1/jobs/{job_id}/metrics").json()["data"]
            names = set().union(*logged[method])
            assert METHOD_METRICS[method] <= names, (method, sorted(names))
            assert METHOD_METRICS[method] <= set(job["latest_metrics"]), method
            assert {f"train/{k}" for k in METHOD_METRICS[method]} <= _tensorboard_tags(api, job_id)
        _check_cli_columns(api, monkeypatch, ids, logged)

        for method, job_id in ids.items():
            r = api.post("/api/v1/models/register", json={"job": job_id, "name": f"tiny-{method}"})
            assert r.status_code == 201, r.text
            assert r.json()["kind"] == "generative"
        name = "methods"
        body = {"model": "tiny-kto", "name": name, "adapters": {"grpo": "tiny-grpo"}}
        r = api.post("/api/v1/deployments", json=body)
        assert r.status_code == 201, r.text
        url = f"/api/v1/deployments/{name}"
        dep = wait_for(lambda: (d := api.get(url).json())["state"] != "starting" and d, what="started")
        assert dep["state"] == "ready", dep
        assert dep["default_model_id"] == "tiny-kto" and "grpo" in dep["model_ids"], dep
        for model, served_by in ((name, "tiny-kto"), (f"{name}/grpo", "grpo")):
            chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
            answer = api.post("/v1/chat/completions", json=chat)
            assert answer.status_code == 200, (model, answer.text)
            assert answer.json()["model"] == served_by  # the adapter that answered
            assert answer.json()["choices"][0]["message"]["role"] == "assistant"
        assert api.delete(f"/api/v1/deployments/{name}").status_code == 204
