"""`tuneforge deployments …`: models served by the server, behind its gateway."""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.table import Table

from tuneforge.errors import ConfigError

from .client import Client
from .common import console, err_console, parse_seconds, print_json

app = typer.Typer(help="Deployments on the server: serve a model behind the gateway.", no_args_is_help=True)
COLOURS = {"ready": "green", "failed": "red", "stopped": "dim", "starting": "yellow"}


def _adapters(items: list[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for item in items or []:
        alias, sep, ref = item.partition("=")
        if not sep or not alias or not ref:
            raise ConfigError(f"--adapter {item!r}: write it as ALIAS=MODEL (a registered fine-tune).")
        out[alias] = ref
    return out or None


def _when(text: str | None) -> str:
    return text.replace("T", " ")[:19] if text else "-"


def _state(d: dict) -> str:
    return f"[{COLOURS.get(d['state'], 'white')}]{d['state']}[/]"


def wait_ready(client: Client, name: str, timeout: float = 900.0, replicas: int | None = None) -> dict:
    """Poll until the deployment is ready (with ``replicas`` ready workers, when given) or failed or
    stopped, with a spinner on stderr."""
    start = time.monotonic()
    with err_console.status(f"deployment {name}: starting") as status:
        while True:
            d = client.get(f"/api/v1/deployments/{name}")
            settled = d["state"] != "starting" and (replicas is None or d["replicas_ready"] == replicas)
            if settled or d["state"] in ("failed", "stopped") or time.monotonic() - start > timeout:
                return d
            status.update(f"deployment {name}: starting ({time.monotonic() - start:.0f}s)")
            time.sleep(0.25)


def show(d: dict, events: list[dict] | None = None) -> None:
    table = Table(show_header=False, box=None)
    rows = [
        ("name", d["name"]),
        ("state", _state(d)),
        ("model", d["model"]),
        ("base model", d["base_model"]),
        ("model ids", ", ".join([d["name"]] + [f"{d['name']}/{m}" for m in d.get("model_ids", [])])),
        ("default model", d["default_model_id"]),
        ("engine", d["engine"]),
        ("replicas", f"{d['replicas_ready']}/{d['replicas']} ready"),
        ("requests", str(d["requests"])),
        ("created", _when(d["created_at"])),
        ("started", _when(d["started_at"])),
        ("openai", d["endpoints"]["openai"]),
        ("infer", d["endpoints"]["infer"]),
        ("generate", d["endpoints"]["generate"]),
    ]
    ro = d.get("rollout") or {}
    if ro.get("stage") in ("evaluating", "canary", "refused", "failed"):
        rows.append(("promotion", f"{ro['model']}: {ro['stage']}, canary share {ro.get('share', 0):.0%}"))
    for k, v in rows:
        table.add_row(f"[bold]{k}[/]", escape(v) if k == "promotion" else v)
    console.print(table)
    if d.get("last_error"):
        # the label in red; the error text (a worker's log tail) printed as is, never as markup
        console.print(f"[red]last error[/]: {escape(d['last_error'])}", highlight=False)
    if events:
        t = Table("time", "event", "message", title="events")
        for e in events[-20:]:
            t.add_row(time.strftime("%H:%M:%S", time.localtime(e["time"])), e["event"], e.get("message", ""))
        console.print(t)


@app.command()
def create(
    model: str = typer.Option(..., "--model", help="A stored base model, a registered model or ft:…"),
    adapter: list[str] = typer.Option(
        None, "--adapter", help="ALIAS=MODEL: another fine-tune on the same base."
    ),
    name: str = typer.Option(None, "--name", help="Deployment name (default: from the model)."),
    engine: str = typer.Option("auto", "--engine", help="auto | transformers | vllm."),
    replicas: int = typer.Option(1, "--replicas", min=1, max=16),
    wait: bool = typer.Option(False, "--wait", help="Wait until it is ready."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Deploy a model; a registered fine-tune deploys as its base + its adapter."""
    client = Client()
    body = {
        "model": model,
        "name": name,
        "adapters": _adapters(adapter),
        "engine": engine,
        "replicas": replicas,
    }
    d = client.post("/api/v1/deployments", json=body)
    if wait:
        d = wait_ready(client, d["name"])
    if json_out:
        print_json(d)
    else:
        console.print(f"deployment [bold]{d['name']}[/]: {_state(d)}")
        if d["state"] == "ready":
            console.print(
                f"try: curl {d['endpoints']['openai']}/chat/completions -H 'Authorization: Bearer $TOKEN' "
                f'-H \'Content-Type: application/json\' -d \'{{"model": "{d["name"]}", "messages": '
                '[{"role": "user", "content": "Hello"}]}\'',
                highlight=False,
                soft_wrap=True,
            )
        elif d["state"] == "failed":
            show(d)
    if wait and d["state"] != "ready":
        raise typer.Exit(1)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json")):
    """List deployments, newest first."""
    data = Client().get("/api/v1/deployments")["data"]
    if json_out:
        print_json(data)
        return
    table = Table("name", "state", "model", "engine", "replicas", "requests", "started", "url")
    for d in data:
        table.add_row(
            d["name"],
            _state(d),
            d["model"],
            d["engine"],
            f"{d['replicas_ready']}/{d['replicas']}",
            str(d["requests"]),
            _when(d["started_at"]),
            d["endpoints"]["infer"],
        )
    console.print(table)


@app.command("show")
def show_(name: str = typer.Argument(...), json_out: bool = typer.Option(False, "--json")):
    """State, URLs, engine, model, request count, last error and events of a deployment."""
    client = Client()
    d = client.get(f"/api/v1/deployments/{name}")
    events = client.get(f"/api/v1/deployments/{name}/events")["data"]
    if json_out:
        print_json({**d, "events": events})
        return
    show(d, events)


@app.command()
def stop(name: str = typer.Argument(...), json_out: bool = typer.Option(False, "--json")):
    """Stop a deployment's workers (it can be started again)."""
    d = Client().post(f"/api/v1/deployments/{name}/stop")
    print_json(d) if json_out else console.print(f"deployment {d['name']}: {_state(d)}")


@app.command()
def start(
    name: str = typer.Argument(...),
    wait: bool = typer.Option(False, "--wait", help="Wait until it is ready."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Start a stopped or failed deployment again."""
    client = Client()
    d = client.post(f"/api/v1/deployments/{name}/start")
    if wait:
        d = wait_ready(client, name)
    print_json(d) if json_out else console.print(f"deployment {d['name']}: {_state(d)}")
    if wait and d["state"] != "ready":
        raise typer.Exit(1)


@app.command()
def scale(
    name: str = typer.Argument(...),
    replicas: int = typer.Option(..., "--replicas", min=1, max=16, help="Worker processes."),
    wait: bool = typer.Option(False, "--wait", help="Wait until every replica is ready."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Change a deployment's number of workers (new ones start cold; the extra ones stop)."""
    client = Client()
    d = client.request("PATCH", f"/api/v1/deployments/{name}", json={"replicas": replicas}).json()
    if wait:
        d = wait_ready(client, name, replicas=replicas)
    print_json(d) if json_out else console.print(
        f"deployment {d['name']}: {_state(d)}, {d['replicas_ready']}/{d['replicas']} replicas ready"
    )
    if wait and d["replicas_ready"] != replicas:
        raise typer.Exit(1)


def _share(text: str) -> float:
    """10% or 0.1 → the percent the API takes."""
    try:
        value = float(text[:-1]) if text.endswith("%") else float(text) * 100
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise ConfigError(f"--canary {text!r}: a share of the traffic, e.g. 10% or 0.1")
    return value


def _wait_decision(client: Client, name: str, timeout: float = 3600.0) -> dict:
    """Poll until the gate has decided and, when it passed, the canary's replica is ready."""
    start = time.monotonic()
    with err_console.status(f"deployment {name}: evaluating") as status:
        while True:
            d = client.get(f"/api/v1/deployments/{name}")
            ro = d.get("rollout") or {}
            stage = ro.get("stage")
            if stage == "canary" and ro.get("candidate"):
                cand = client.get(f"/api/v1/deployments/{ro['candidate']}")
                if cand["state"] != "starting":
                    return d
            elif stage != "evaluating" or time.monotonic() - start > timeout:
                return d
            status.update(f"deployment {name}: {stage} ({time.monotonic() - start:.0f}s)")
            time.sleep(0.5)


def _scores(ro: dict) -> str:
    scores = ro.get("scores") or {}
    return "; ".join(
        f"{side}: " + ", ".join(f"{k}={v}" for k, v in sorted(m.items()) if k != "samples")
        for side, m in scores.items()
    )


@app.command()
def promote(
    name: str = typer.Argument(..., help="The live deployment."),
    model: str = typer.Option(None, "--model", help="The candidate: MODEL@VERSION (a registered model)."),
    dataset: str = typer.Option(None, "--on", help="The dataset both models are evaluated on."),
    canary: str = typer.Option("10%", "--canary", help="The candidate's share of the traffic: 10% or 0.1."),
    gate: str = typer.Option(
        None,
        "--gate",
        help="METRIC>=VALUE or METRIC<=VALUE (eval_loss, perplexity, rouge-1/2/l, bleu-4); the candidate "
        "must also do no worse than the live model on it (on eval_loss without a gate).",
    ),
    auto_after: str = typer.Option(None, "--auto-after", help="Take all traffic this long after: 10m, 1h."),
    max_samples: int = typer.Option(100, "--max-samples", min=1, help="Evaluation records per model."),
    confirm: bool = typer.Option(False, "--confirm", help="Give the running canary all of the traffic."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the gate and the canary's start."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Promote a model onto a live deployment: evaluated first, then a canary, then (--confirm) all of it."""
    client = Client()
    if confirm:
        d = client.post(f"/api/v1/deployments/{name}/promote/confirm")
        ro = d.get("rollout") or {}
        print_json(d) if json_out else console.print(
            f"deployment {d['name']}: {ro.get('model')} takes all traffic; {ro.get('live_model')} stays up "
            f"for `tuneforge deployments rollback {d['name']}`",
            highlight=False,
            soft_wrap=True,
        )
        return
    if not model or not dataset:
        raise ConfigError("promote needs --model MODEL@VERSION and --on DATASET (or --confirm)")
    body = {
        "model": model,
        "dataset": dataset,
        "canary_percent": _share(canary),
        "gate": gate,
        "auto_after_s": parse_seconds(auto_after, "--auto-after"),
        "max_samples": max_samples,
    }
    d = client.post(f"/api/v1/deployments/{name}/promote", json=body)
    if wait:
        d = _wait_decision(client, name)
    ro = d.get("rollout") or {}
    if json_out:
        print_json(d)
    elif ro.get("stage") == "evaluating":
        console.print(f"deployment {name}: evaluating {model}; see `tuneforge deployments show {name}`")
    elif ro.get("stage") == "canary":
        console.print(f"{ro['decision']} ({_scores(ro)})", highlight=False, soft_wrap=True)
        share = f"{ro['share']:.0%}"
        after = f"; all of it in {auto_after}" if auto_after else f"; `promote {name} --confirm` gives it all"
        line = f"canary: {model} takes {share} of {name}'s traffic{after}"
        console.print(line, highlight=False, soft_wrap=True)
    else:
        # a promotion that failed after its gate passed keeps the gate's decision: the failure is the reason
        first = ("reason", "decision") if ro.get("stage") == "failed" else ("decision", "reason")
        why = next((ro[k] for k in first if ro.get(k)), ro.get("stage"))
        err_console.print(f"[red]{ro.get('stage')}[/]: {escape(str(why))}", highlight=False, soft_wrap=True)
        if ro.get("scores"):
            err_console.print(_scores(ro), highlight=False, soft_wrap=True)
    if ro.get("stage") in ("refused", "failed"):
        raise typer.Exit(1)


@app.command()
def rollback(name: str = typer.Argument(...), json_out: bool = typer.Option(False, "--json")):
    """Back to the model that served before: ends a canary or undoes the last confirmed promotion."""
    d = Client().post(f"/api/v1/deployments/{name}/rollback")
    line = f"deployment {d['name']}: {d['model']} serves all traffic ({_state(d)})"
    print_json(d) if json_out else console.print(line, highlight=False, soft_wrap=True)


@app.command()
def rm(name: str = typer.Argument(...)):
    """Remove a deployment (its workers are stopped first)."""
    Client().request("DELETE", f"/api/v1/deployments/{name}")
    console.print(f"removed deployment {name}")
