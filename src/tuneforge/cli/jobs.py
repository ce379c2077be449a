"""`tuneforge jobs …`: training jobs on the server.

Long because: it is one command group (create, submit, list, get, logs with --follow, events, metrics,
cancel, resume, retry, delete, checkpoints), each a thin parse → client → print; split, the group's shared
options and printers would be imported back from one place anyway.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
import yaml
from rich.table import Table

from tuneforge.errors import ConfigError
from tuneforge.spec import parse_assignment

from .client import Client
from .common import console, err_console, parse_seconds, print_json, shown

app = typer.Typer(help="Jobs on the server: create, follow, inspect, cancel, resume.", no_args_is_help=True)
TERMINAL = ("succeeded", "failed", "cancelled")


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _dataset_ref(client: Client, ref: str) -> str:
    """A local file or folder is uploaded first; anything else names a dataset on the server."""
    path = Path(ref).expanduser()
    if path.exists():
        ds = client.upload_dataset(path)
        err_console.print(f"uploaded {path} → {ds['id']} ({ds['records']} records)", highlight=False)
        return ds["id"]
    return ref


def _kind_rows(job: dict) -> list[tuple[str, str]]:
    if job["kind"] != "command":
        return [("model", job["spec"].get("model"))]
    import shlex

    spec = job["spec"]
    mounts = [f"{m['name']} → {m['path']}" for m in spec.get("datasets", []) + spec.get("models", [])]
    rows = [("name", job["name"]), ("command", shlex.join(spec.get("command", [])))]
    rows += [("mounts", ", ".join(mounts) or "-"), ("priority", str(job["priority"]))]
    if job.get("labels"):
        rows.append(("labels", ", ".join(f"{k}={v}" for k, v in job["labels"].items())))
    if job.get("exit_code") is not None:
        rows.append(("exit code", str(job["exit_code"])))
    return rows


def show_job(job: dict) -> None:
    table = Table(show_header=False, box=None)
    p = job["progress"]
    rows = [
        ("id", job["id"]),
        ("state", job["state"]),
        ("kind", job["kind"]),
        *_kind_rows(job),
        ("progress", f"{p['step']}/{p['max_steps'] or '?'}"),
        ("attempt", f"{job['attempt']} (restart {job['restart_policy']}, max {job['max_retries']})"),
        ("created", _when(job["created_at"])),
        ("started", _when(job["started_at"])),
        ("finished", _when(job["finished_at"])),
    ]
    m = job.get("latest_metrics") or {}
    for key in ("loss", "eval_loss", "lr", "tokens_per_s"):
        if key in m:
            rows.append((key, f"{m[key]:.4g}" if isinstance(m[key], float) else str(m[key])))
    for k, v in rows:
        table.add_row(f"[bold]{k}[/]", str(v))
    console.print(table)
    if job.get("error"):
        e = job["error"]
        console.print(f"[red]error[/]: {e.get('message')} (exit code {e.get('exit_code')})", highlight=False)
        if e.get("log_tail"):
            console.print("[dim]last lines of the log:[/]")
            console.print(e["log_tail"], highlight=False, markup=False)


def follow(client: Client, job_id: str, json_out: bool = False) -> dict:
    """A progress bar with the loss until the job ends (polling the job: robust to reconnects)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, disable=json_out) as bar:
        task = bar.add_task("job", total=None, state="queued", info="", count="")
        while True:
            job = client.get(f"/api/v1/jobs/{job_id}")
            p, m = job["progress"], job.get("latest_metrics") or {}
            info = f"loss {m['loss']:.4f}" if isinstance(m.get("loss"), float) else ""
            count = f"{p['step']}/{p['max_steps']}" if p["max_steps"] else ""  # evaluations have no steps
            bar.update(
                task, total=p["max_steps"], completed=p["step"], state=job["state"], info=info, count=count
            )
            if job["state"] in TERMINAL:
                return job
            time.sleep(1.0)


def _finish(job: dict, json_out: bool) -> None:
    if json_out:
        print_json(job)
    else:
        colour = {"succeeded": "green", "failed": "red"}.get(job["state"], "yellow")
        console.print(f"job {job['id']}: [{colour}]{job['state']}[/]")
        if job["state"] != "succeeded":
            show_job(job)
    if job["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def create(
    template: str = typer.Option(None, "--template", help="sft-lora, sft-qlora, sft-full, dpo-lora, …"),
    model: str = typer.Option(None, "--model", help="A model on the server."),
    dataset: list[str] = typer.Option(
        None, "--dataset", help="A stored dataset (or a local file to upload)."
    ),
    validation: str = typer.Option(None, "--validation", help="A validation dataset."),
    spec: Path = typer.Option(None, "--spec", help="A whole JobSpec YAML instead of --template/--model."),
    set_: list[str] = typer.Option(None, "--set", help="Override a key: --set train.learning_rate=2e-4."),
    gpus: int = typer.Option(None, "--gpus", help="GPUs for the job."),
    workers: int = typer.Option(None, "--workers", help="Training processes (DDP) on the machine."),
    queue: str = typer.Option(None, "--queue", help="The queue to wait in (the server's queues)."),
    priority: int = typer.Option(0, "--priority", help="Higher starts first."),
    restart: str = typer.Option("never", "--restart", help="never or on-failure."),
    max_retries: int = typer.Option(0, "--max-retries"),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Show progress until the job ends."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Queue a training job on the server (like `baizectl job submit`)."""
    client = Client()
    body: dict = {
        "priority": priority,
        "restart_policy": restart,
        "max_retries": max_retries,
        "overrides": dict(parse_assignment(a) for a in set_ or []),
    }
    if spec:
        try:
            body["spec"] = yaml.safe_load(spec.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{spec}: {exc}") from None
        train = body["spec"].get("data", {}).get("train")
        if isinstance(train, str):
            body["spec"]["data"]["train"] = [
                _dataset_ref(client, str(spec.parent / train)) if (spec.parent / train).exists() else train
            ]
    else:
        if not (template and model and dataset):
            raise ConfigError("give --template, --model and --dataset, or --spec FILE.")
        body.update(template=template, model=model, datasets=[_dataset_ref(client, d) for d in dataset])
        if validation:
            body["validation_dataset"] = _dataset_ref(client, validation)
    resources = {"gpus": gpus, "workers": workers, "queue": queue}
    if any(v is not None for v in resources.values()):
        body["resources"] = {k: v for k, v in resources.items() if v is not None}
    job = _queue(client, body, follow_, json_out)
    if job is not None:
        _finish(follow(client, job["id"], json_out), json_out)


def _queue(client, body: dict, follow_: bool, json_out: bool) -> dict | None:
    """Create the job and say so; the job when the caller follows it, else None (nothing left to do)."""
    job = client.post("/api/v1/jobs", json=body)
    if not follow_:
        if json_out:
            print_json(job)
        else:
            console.print(f"queued [bold]{job['id']}[/]  (follow: tuneforge jobs logs -f {job['id']})")
        return None
    if not json_out:
        console.print(f"queued [bold]{job['id']}[/]")
    return job


@app.command("list")
def list_(
    state: str = typer.Option(None, "--state", help="queued, running, succeeded, failed or cancelled."),
    limit: int = typer.Option(50, "--limit"),
    json_out: bool = typer.Option(False, "--json"),
):
    """Jobs, newest first."""
    params = {"limit": limit, **({"state": state} if state else {})}
    data = Client().get("/api/v1/jobs", params=params)["data"]
    if json_out:
        print_json(data)
        return
    table = Table("id", "kind", "state", "queue", "model / name", "step", "loss", "created")
    for j in data:
        p, loss = j["progress"], (j.get("latest_metrics") or {}).get("loss")
        table.add_row(
            j["id"],
            j["kind"],
            j["state"],
            j.get("queue") or "",
            str(j["spec"].get("model", "") if j["kind"] != "command" else j["name"])[-40:],
            f"{p['step']}/{p['max_steps'] or '?'}",
            f"{loss:.4f}" if loss else "",
            _when(j["created_at"]),
        )
    console.print(table)


@app.command()
def show(job_id: str, json_out: bool = typer.Option(False, "--json")):
    """One job: state, progress, metrics, error with its log tail."""
    job = Client().get(f"/api/v1/jobs/{job_id}")
    if json_out:
        print_json(job)
    else:
        show_job(job)


@app.command()
def logs(
    job_id: str,
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
    rank: int = typer.Option(None, "--rank", help="One rank's own log, of a job with several workers."),
):
    """The worker's output (with --rank, that rank's)."""
    client = Client()
    params = {} if rank is None else {"rank": rank}
    if not follow_:
        sys.stdout.write(client.request("GET", f"/api/v1/jobs/{job_id}/logs", params=params).text)
        return
    for event, data in client.events(f"/api/v1/jobs/{job_id}/logs", params=params):
        if event == "log":
            sys.stdout.write(data["data"])
            sys.stdout.flush()
        elif event == "end":
            err_console.print(f"job {job_id}: {data['state']}")


# Beside the loss, the figures that say how a preference, reward-model or GRPO run goes, where the job logged
# them (each GRPO reward function's mean too); --keys shows any others, --json all of them.
METHOD_COLUMNS = ("rewards/margins", "rewards/accuracies", "accuracy", "margin", "kl", "reward")
MAX_FUNCTIONS = 8


def _metric_columns(rows: list[dict]) -> list[str]:
    logged = dict.fromkeys(k for r in rows for k in r)
    base = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s")
    # a few: a metrics file with thousands of such keys would make a table no terminal shows (--keys has any)
    functions = [k for k in logged if k.startswith("rewards/") and k.endswith("/mean")][:MAX_FUNCTIONS]
    lengths = ["completions/mean_length"]
    return [k for k in (*base, *METHOD_COLUMNS, *functions, *lengths) if k in logged]


@app.command()
def metrics(
    job_id: str,
    keys: str = typer.Option(
        None,
        "--keys",
        help="Columns, comma-separated, e.g. step,loss,rewards/chosen (default: the loss and the method's "
        "main figures).",
    ),
    json_out: bool = typer.Option(False, "--json"),
):
    """Logged metrics (one row per logged step)."""
    client, rows, offset = Client(), [], 0
    while True:
        page = client.get(f"/api/v1/jobs/{job_id}/metrics", params={"offset": offset, "limit": 5000})
        rows += page["data"]
        if not page["data"]:
            break
        offset = page["next_offset"]
    columns = _metric_columns(rows)
    if keys:
        columns = [k.strip() for k in keys.split(",") if k.strip()]
        logged = dict.fromkeys(k for r in rows for k in r)
        if unknown := [k for k in columns if k not in logged]:
            said = ", ".join([*list(logged)[:50], *(["…"] if len(logged) > 50 else [])]) or "nothing yet"
            raise ConfigError(f"--keys: job {job_id} logged no {', '.join(unknown)}; it logged {said}.")
        rows = [{k: r[k] for k in columns if k in r} for r in rows]
    if json_out:
        print_json(rows)
        return
    table = Table(*map(shown, columns))  # names and values are the job's: "[/]" in one raised MarkupError
    for r in rows:
        if not any(k in r for k in columns if k not in ("step", "epoch")):
            continue  # the trainer's closing summary (train_runtime, train_loss): `jobs show` has it
        cells = (f"{r[k]:.4g}" if isinstance(r.get(k), float) else shown(r.get(k, "")) for k in columns)
        table.add_row(*cells)
    console.print(table)


@app.command()
def cancel(job_id: str):
    """Cancel a queued or running job (the worker saves a checkpoint first)."""
    job = Client().post(f"/api/v1/jobs/{job_id}/cancel")
    console.print(f"job {job['id']}: {job['state']}{' (stopping)' if job['state'] == 'running' else ''}")


@app.command()
def resume(
    job_id: str, checkpoint: str = typer.Option(None, "--checkpoint", help="step-N (default: latest).")
):
    """Requeue a failed or cancelled job from a checkpoint."""
    job = Client().post(f"/api/v1/jobs/{job_id}/resume", json={"checkpoint": checkpoint})
    console.print(f"job {job['id']}: {job['state']} (from {job['resume_from']})")


@app.command()
def retry(job_id: str):
    """Run a finished job again from the start, as a new job."""
    job = Client().post(f"/api/v1/jobs/{job_id}/retry")
    console.print(f"queued [bold]{job['id']}[/] (retry of {job_id})")


@app.command()
def rm(job_id: str):
    """Delete a finished job and its files."""
    Client().delete(f"/api/v1/jobs/{job_id}")
    console.print(f"removed {job_id}")


# -- a user's own command -------------------------------------------------------------------------------

PRIORITIES = {"low": -10, "normal": 0, "high": 10}
ZIP_SKIP = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints"}


def _pairs(values: list[str], option: str, sep: str, example: str) -> list[tuple[str, str]]:
    out = []
    for v in values or []:
        key, found, value = v.partition(sep)
        if not found or not key:
            raise ConfigError(f"{option} {v!r}: expected {example}.")
        out.append((key, value))
    return out


def _priority(value: str) -> int:
    if value in PRIORITIES:
        return PRIORITIES[value]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--priority {value!r}: use low, normal, high or a number.") from None


def zip_folder(folder: Path, target: Path) -> int:
    """The working directory as a zip (links and VCS/cache folders left out); returns the file count."""
    import os
    import zipfile

    count = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for base, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in ZIP_SKIP and not (Path(base) / d).is_symlink())
            for f in sorted(files):
                p = Path(base) / f
                if p.is_symlink() or not p.is_file():
                    continue
                zf.write(p, p.relative_to(folder).as_posix())
                count += 1
    return count


def _upload_code(client: Client, path: Path) -> dict:
    """A folder is zipped here (the server may be on another machine); a .zip is sent as it is."""
    import tempfile

    path = path.expanduser()
    if not path.exists():
        raise ConfigError(f"{path}: no such folder or zip.")
    with tempfile.TemporaryDirectory() as tmp:
        if path.is_dir():
            archive = Path(tmp) / "code.zip"
            zip_folder(path, archive)
        elif path.suffix.lower() == ".zip":
            archive = path
        else:
            raise ConfigError(f"{path}: give a folder or a .zip of one.")
        with open(archive, "rb") as fh:
            return client.request(
                "POST", "/api/v1/jobs/code", files={"file": ("code.zip", fh)}, timeout=None
            ).json()


@app.command(context_settings={"allow_interspersed_args": False})
def submit(
    command: list[str] = typer.Argument(..., help="The command to run, after `--`."),
    name: str = typer.Option(..., "--name", help="A name for the job."),
    workdir: Path = typer.Option(None, "--workdir", help="A local folder: zipped and uploaded as the code."),
    code: Path = typer.Option(None, "--code", help="A local folder or .zip to upload as the code."),
    dataset: list[str] = typer.Option(
        None, "--dataset", help="NAME:RELPATH — a stored dataset (or a local file to upload) linked there."
    ),
    model: list[str] = typer.Option(None, "--model", help="NAME:RELPATH — a stored model linked there."),
    output: str = typer.Option("output", "--output", help="Where the writable output folder appears."),
    gpus: int = typer.Option(0, "--gpus", help="GPU slots (CUDA_VISIBLE_DEVICES)."),
    workers: int = typer.Option(
        1, "--workers", help="Run N copies (ranks) with the variables torchrun sets; logs per rank."
    ),
    queue: str = typer.Option(None, "--queue", help="The queue to wait in (the server's queues)."),
    env: list[str] = typer.Option(None, "--env", help="K=V for the command's environment."),
    priority: str = typer.Option("normal", "--priority", help="low, normal, high or a number."),
    restart: str = typer.Option("never", "--restart-policy", help="never or on-failure."),
    max_retries: int = typer.Option(None, "--max-retries", help="Restarts allowed (on-failure: default 3)."),
    time_limit: str = typer.Option(None, "--time-limit", help="Stop it after 90s, 30m, 2h, 1d."),
    label: list[str] = typer.Option(None, "--label", help="k=v, shown on the job."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Stream its log until it ends."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Run your own training command through the server's queue, GPUs, logs and registry.

    tuneforge jobs submit --name ft --workdir . --dataset advertisegen:data/AdvertiseGen
    --priority high --restart-policy on-failure -- python finetune.py data/AdvertiseGen
    """
    if workdir and code:
        raise ConfigError("give --workdir or --code, not both.")
    if restart not in ("never", "on-failure"):
        raise ConfigError(f"--restart-policy {restart!r}: use never or on-failure.")
    client = Client()
    mounts = []
    for ref, rel in _pairs(dataset, "--dataset", ":", "NAME:RELPATH, e.g. advertisegen:data/AdvertiseGen"):
        mounts.append({"name": _dataset_ref(client, ref), "path": rel})
    body: dict = {
        "kind": "command",
        "name": name,
        "command": list(command),
        "datasets": mounts,
        "models": [
            {"name": n, "path": p}
            for n, p in _pairs(model, "--model", ":", "NAME:RELPATH, e.g. smollm2:base")
        ],
        "output": output,
        "env": dict(_pairs(env, "--env", "=", "K=V")),
        "gpus": gpus,
        "workers": workers,
        **({"queue": queue} if queue else {}),
        "priority": _priority(priority),
        "restart_policy": restart,
        "max_retries": max_retries if max_retries is not None else (3 if restart == "on-failure" else 0),
        "time_limit_s": parse_seconds(time_limit, "--time-limit"),
        "labels": dict(_pairs(label, "--label", "=", "k=v")),
    }
    source = workdir or code
    if source:
        uploaded = _upload_code(client, source)
        body["code"] = uploaded["id"]
        err_console.print(
            f"uploaded {source} → {uploaded['id']} ({uploaded['files']} files)", highlight=False
        )
    job = _queue(client, body, follow_, json_out)
    if job is None:
        return
    if not json_out:
        for event, data in client.events(f"/api/v1/jobs/{job['id']}/logs"):
            if event == "log":
                sys.stdout.write(data["data"])
                sys.stdout.flush()
    _finish(client.get(f"/api/v1/jobs/{job['id']}"), json_out)
