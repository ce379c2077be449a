"""`tuneforge models …`"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tuneforge.jobs.folder import FINAL_DIR
from tuneforge.models.info import read_info
from tuneforge.models.pull import import_model, pull_model
from tuneforge.models.store import list_models, remove_model, resolve_model

from .common import console, print_json, progress_lines, stage_progress, tee

app = typer.Typer(help="Base and fine-tuned models.", no_args_is_help=True)


def _fmt_params(n) -> str:
    return f"{n / 1e6:.1f}M" if n else "?"


def show_info(info: dict) -> None:
    table = Table(show_header=False, box=None)
    for key in (
        "name",
        "kind",
        "architecture",
        "parameters",
        "context_length",
        "dtype",
        "chat_template",
        "eos_token",
        "stop_tokens",
        "source",
        "base_model",
        "job",
    ):
        if key in info:
            value = _fmt_params(info[key]) if key == "parameters" else info[key]
            table.add_row(f"[bold]{key}[/]", str(value))
    for fname, digest in info.get("files", {}).items():
        table.add_row("[bold]sha256[/]", f"{fname} {digest[:16]}…")
    console.print(table)


@app.command()
def pull(
    name: str = typer.Argument(..., help="A catalog name (smollm2-135m-instruct) or hub id org/name."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 for the saved weights."),
    json_out: bool = typer.Option(False, "--json", help="Print the model record as JSON."),
    progress_file: Path = typer.Option(
        None, "--progress-file", help="Append JSON lines {stage, done, total} here as it goes (throttled)."
    ),
):
    """Fetch a base model into the model store (instant when already there)."""
    with stage_progress(not json_out) as bar, progress_lines(progress_file) as lines:
        info, new = pull_model(name, tee(bar, lines), dtype)
    if json_out:
        print_json(info)
        return
    console.print(
        f"{'pulled' if new else 'already pulled'}: [bold]{info['name']}[/] "
        f"({_fmt_params(info['parameters'])} parameters)"
    )
    show_info(info)


@app.command("import")
def import_(
    path: str = typer.Argument(..., help="An HF model folder, a .gguf file or a hub id org/name."),
    name: str = typer.Option(None, help="Name in the store (default: from the path)."),
    json_out: bool = typer.Option(False, "--json"),
    progress_file: Path = typer.Option(
        None, "--progress-file", help="Append JSON lines {stage, done, total} here as it goes (throttled)."
    ),
):
    """Import a model folder, GGUF file or hub model into the store."""
    with stage_progress(not json_out) as bar, progress_lines(progress_file) as lines:
        info = import_model(path, name, tee(bar, lines))
    if json_out:
        print_json(info)
    else:
        console.print(f"imported: [bold]{info['name']}[/]")
        show_info(info)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json")):
    """List the models in the store."""
    models = list_models()
    if json_out:
        print_json(models)
        return
    table = Table("name", "kind", "architecture", "params", "context", "dtype", "chat template", "source")
    for m in models:
        table.add_row(
            m["name"],
            m.get("kind", ""),
            str(m.get("architecture")),
            _fmt_params(m.get("parameters")),
            str(m.get("context_length")),
            str(m.get("dtype")),
            "yes" if m.get("chat_template") else "no",
            m.get("source", ""),
        )
    console.print(table)


@app.command()
def show(name: str, json_out: bool = typer.Option(False, "--json")):
    """Show one model's record."""
    info = read_info(resolve_model(name))
    if json_out:
        print_json(info)
    else:
        show_info(info)


@app.command()
def rm(name: str):
    """Remove a model from the store."""
    remove_model(name)
    console.print(f"removed {name}")


@app.command()
def export(
    model: str = typer.Argument(
        ...,
        help="A LoRA adapter folder (a job's final/ or a checkpoint); with --format gguf also a stored "
        "model's name or an HF model folder (a full fine-tune).",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write (must not exist or be empty)."),
    fmt: str = typer.Option(
        "safetensors",
        "--format",
        help="safetensors (merged HF folder) or gguf (one file + Ollama Modelfile).",
    ),
    quant: str = typer.Option(
        None, "--quant", help="With --format gguf: f16 (default), q8_0 or q4_0 (q4_k_m: see the docs)."
    ),
    base: str = typer.Option(None, help="Base model (default: the one recorded in the adapter)."),
    dtype: str = typer.Option("float32", help="With --format safetensors: float32, bfloat16 or float16."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    progress_file: Path = typer.Option(
        None, "--progress-file", help="Append JSON lines {stage, done, total} here as it goes (throttled)."
    ),
    remote: bool = typer.Option(
        False,
        "--remote",
        help="Export on the server (TUNEFORGE_URL): MODEL is a registered name[@version] or a stored model; "
        "the files are downloaded into --output.",
    ),
    register_version: bool = typer.Option(
        False,
        "--register",
        help="With --remote and --format safetensors: register the merged folder as "
        "the model's next version on the server.",
    ),
):
    """Merge a fine-tune into its base: a safetensors folder, or a GGUF file with an Ollama Modelfile."""
    from tuneforge.errors import ConfigError

    if remote:
        from .remote_export import export_remote

        done = export_remote(model, output, fmt, quant, register_version, not json_out)
        if json_out:
            print_json(done)
        else:
            registered = f"; registered [bold]{done['registered']}[/]" if done.get("registered") else ""
            console.print(f"exported {done['model']} into [bold]{output}[/]{registered}")
        return
    if register_version:
        raise ConfigError("--register applies to --remote exports (the server registers the merged folder).")

    if fmt == "gguf":
        from tuneforge.models.gguf_export import export_gguf

        with stage_progress(not json_out) as bar, progress_lines(progress_file) as lines:
            done = export_gguf(model, output, quant or "f16", base, tee(bar, lines))
        if json_out:
            print_json(
                {
                    "output": str(done.folder),
                    "gguf": str(done.gguf),
                    "modelfile": str(done.modelfile),
                    "quant": done.quant,
                    "architecture": done.architecture,
                    "tensors": done.tensors,
                    "warnings": done.warnings,
                }
            )
            return
        for warning in done.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        console.print(f"GGUF ({done.quant}, {done.tensors} tensors) written to [bold]{done.gguf}[/]")
        console.print(f"Ollama: cd {done.folder} && ollama create {done.folder.name} -f Modelfile")
        return
    if fmt != "safetensors":
        raise ConfigError(f"--format {fmt!r}: choose safetensors or gguf.")
    if quant:
        raise ConfigError("--quant applies to --format gguf only; a safetensors export takes --dtype.")
    from tuneforge.models.export import merge_adapter

    with stage_progress(not json_out) as bar, progress_lines(progress_file) as lines:
        out = merge_adapter(Path(model), output, base, dtype, tee(bar, lines))
    if json_out:
        print_json({"output": str(out)})
    else:
        console.print(f"merged model written to [bold]{out}[/]")


@app.command()
def register(
    job: str = typer.Argument(..., help="A job on the server."),
    name: str = typer.Option(..., "--name", help="The registered model's name (versions count up)."),
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="step-N or final (default: the best checkpoint, when marked; else final)."
    ),
    path: str = typer.Option(
        None,
        "--path",
        help="A folder of the job (a command job's output/checkpoint-3000): HF model or adapter.",
    ),
    base: str = typer.Option(None, "--base", help="With --path: the stored base model it was trained on."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Register a job's output or checkpoint as a named, versioned model (on the server)."""
    from .client import Client

    body = {"job": job, "name": name, "checkpoint": checkpoint}
    if path or base:
        body.update(path=path, base=base)
    row = Client().post("/api/v1/models/register", json=body)
    if json_out:
        print_json(row)
    else:
        chose = checkpoint is None and not path and row["checkpoint"] != FINAL_DIR
        best = ", its best checkpoint" if chose else ""
        where = f"{row['job']} ({row['checkpoint']}{best}, base {row['base_model']})"
        console.print(f"registered [bold]{row['ref']}[/] from {where}")
