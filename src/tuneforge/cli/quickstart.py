"""`tuneforge quickstart`: the main path end to end on the embedded default."""

from __future__ import annotations

import contextlib
import json
import time
from importlib import resources
from pathlib import Path

import typer
import yaml

from tuneforge.jobs.folder import FINAL_DIR
from tuneforge.settings import get_settings

from .client import DEFAULT_URL
from .common import console, stage_progress
from .jobs import follow, show_job

QUESTIONS = [
    [{"role": "user", "content": "Give three tips for staying healthy."}],
    [{"role": "user", "content": "类型#上衣*颜色#白色*风格#简约"}],
]


# A 135M model decoded greedily loops on one word after a few LoRA steps; the demo should show what
# training changed, not that decoding artefact.
DEMO_REPETITION_PENALTY = 1.3


def quickstart(
    skip_train: bool = typer.Option(False, "--skip-train", help="Only pull and validate."),
    steps: int = typer.Option(30, help="LoRA steps to train on the sample data."),
):
    """Pull the default model, validate the sample dataset, fine-tune it with LoRA, compare answers."""
    from tuneforge.data.load import load_records
    from tuneforge.data.validate import build_report
    from tuneforge.models.pull import pull_model

    settings = get_settings()
    console.rule("1. base model")
    with stage_progress() as progress:
        info, new = pull_model(settings.default_model, progress)
    console.print(
        f"{'pulled' if new else 'already pulled'} {info['name']}: {info['architecture']}, "
        f"{info['parameters'] / 1e6:.1f}M parameters, context {info['context_length']}"
    )

    console.rule("2. sample dataset")
    samples = resources.files("tuneforge") / "samples"
    data = Path(str(samples / "alpaca_sample.json"))
    from tuneforge.models.load import load_tokenizer

    tokenizer = load_tokenizer(info["name"])
    report = build_report(load_records(data), tokenizer, tokenizer.chat_template, 512, preview=0)
    d = report.to_dict()
    console.print(
        f"{data.name}: {d['format']}, {d['records']} records, valid={d['valid']}, "
        f"median {d['stats']['sequence']['median']} tokens, {d['stats']['trained_tokens']} trained"
    )
    if skip_train:
        console.print("next: tuneforge train " + str(samples / "sample_spec.yaml"))
        return

    console.rule(f"3. LoRA fine-tune ({steps} steps) through the control plane")
    with control_plane() as (client, own):
        ds = client.upload_dataset(data, name="alpaca-sample")
        console.print(
            f"dataset {ds['id']} ({ds['records']} records) stored through {client.url}", highlight=False
        )
        spec = yaml.safe_load((samples / "sample_spec.yaml").read_text(encoding="utf-8"))
        spec["data"]["train"] = ds["id"]
        spec["train"]["max_steps"] = steps
        job = client.post("/api/v1/jobs", json={"spec": spec})
        console.print(f"job {job['id']} queued; following it (also: tuneforge jobs logs -f {job['id']})")
        job = follow(client, job["id"])
        if job["state"] != "succeeded":
            show_job(job)
            raise typer.Exit(1)
        folder = settings.jobs_dir / job["id"]
        m = job["latest_metrics"]
        console.print(
            f"job folder: {folder}  train_loss={m.get('train_loss', m.get('loss', 0)):.4f}  "
            f"eval_loss={m.get('eval_loss', float('nan')):.4f}"
        )
        answers = deploy_and_compare(client, job["id"], own)
    console.rule("next")
    console.print(
        f"tuneforge chat {DEPLOYMENT} --compare {DEPLOYMENT}/{info['name']}\n"
        f"tuneforge evals create --model {DEPLOYMENT} --dataset {ds['id']} --compare-base --max-samples 8\n"
        f"tuneforge models export {folder / FINAL_DIR} -o merged-model",
        highlight=False,
    )
    return answers


DEPLOYMENT = "sample-lora"


def deploy_and_compare(client, job_id: str, own_server: bool) -> dict[str, list[str]]:
    """Register the job's adapter, deploy it (its base rides along in the same worker), ask both the
    same questions through the gateway, and print the curl command that asks it with a deployment token."""
    from .deployments import wait_ready

    console.rule("4. deploy the fine-tuned model beside its base")
    reg = client.post("/api/v1/models/register", json={"job": job_id, "name": DEPLOYMENT})
    with contextlib.suppress(Exception):  # a deployment left by an earlier quickstart
        client.request("DELETE", f"/api/v1/deployments/{DEPLOYMENT}")
    started = time.monotonic()
    dep = client.post("/api/v1/deployments", json={"model": reg["ref"], "name": DEPLOYMENT})
    dep = wait_ready(client, DEPLOYMENT)
    if dep["state"] != "ready":
        console.print(f"deployment {DEPLOYMENT} is {dep['state']}: {dep.get('last_error')}", highlight=False)
        raise typer.Exit(1)
    base_id = f"{DEPLOYMENT}/{dep['model_ids'][0]}"
    console.print(
        f"deployment {DEPLOYMENT} ready in {time.monotonic() - started:.1f}s: model ids {DEPLOYMENT} "
        f"(the fine-tune, {reg['ref']}) and {base_id} (its base)",
        highlight=False,
    )
    answers: dict[str, list[str]] = {base_id: [], DEPLOYMENT: []}
    for q in QUESTIONS:
        console.print(f"[bold]user:[/] {q[0]['content']}", highlight=False)
        for model, label in ((base_id, "base"), (DEPLOYMENT, "fine-tuned")):
            body = {"model": model, "messages": q, "max_tokens": 48, "temperature": 0.0}
            body["repetition_penalty"] = DEMO_REPETITION_PENALTY
            r = client.post("/v1/chat/completions", json=body, timeout=300)
            text = r["choices"][0]["message"]["content"]
            answers[model].append(text)
            console.print(f"[bold]{label}:[/] {text}", highlight=False)
        console.print()
    token = client.post(
        "/api/v1/tokens", json={"name": f"{DEPLOYMENT}-demo", "scope": f"deployment:{DEPLOYMENT}"}
    )
    url = DEFAULT_URL if own_server else client.url
    if own_server:
        console.print(
            "[dim]this quickstart ran its own control plane; `tuneforge server` brings the deployment back "
            f"at {DEFAULT_URL}, where this asks it:[/]"
        )
    else:
        console.print("[dim]ask it yourself (a token for this deployment only):[/]")
    question = json.dumps({"model": DEPLOYMENT, "messages": QUESTIONS[0], "max_tokens": 48})
    console.print(
        f"curl {url}/v1/chat/completions -H 'Authorization: Bearer {token['token']}' "
        f"-H 'Content-Type: application/json' -d '{question}'",
        highlight=False,
        soft_wrap=True,
    )
    return answers


@contextlib.contextmanager
def control_plane():  # yields (client, whether this quickstart started the server)
    """The running `tuneforge server` at TUNEFORGE_URL if it answers; else one started here on a free
    127.0.0.1 port for the length of the quickstart (same home, same database, same job queue)."""
    from .client import Client, ServerError

    client = Client()
    try:
        client.get("/healthz")
        yield client, False
        return
    except ServerError:
        pass
    import threading

    import uvicorn

    from tuneforge.jobs.ranks import free_port
    from tuneforge.platform.app import create_app

    app = create_app()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="quickstart-server", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    token = (app.state.platform.home / "admin.token").read_text().strip()
    try:
        yield Client(f"http://127.0.0.1:{port}", token), True
    finally:
        server.should_exit = True
        thread.join(timeout=30)
