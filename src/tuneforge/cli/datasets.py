"""`tuneforge datasets …`"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from tuneforge.data.formats import FORMATS, parse_mapping
from tuneforge.data.load import load_records
from tuneforge.data.store import (
    find_dataset,
    list_datasets,
    read_stored_records,
    remove_dataset,
    store_dataset,
)
from tuneforge.data.validate import ValidationReport, build_report
from tuneforge.errors import TuneforgeError
from tuneforge.settings import get_settings

from .common import console, err_console, print_json, stage_progress

app = typer.Typer(help="Datasets: validate locally, store, inspect.", no_args_is_help=True)
log = logging.getLogger(__name__)

FORMAT_HELP = f"Force a format: {', '.join(FORMATS)}."
MAP_HELP = "Map columns, e.g. prompt=content,response=summary[,system=COL,query=COL,history=COL]."


def stats_tokenizer(model: str | None, quiet: bool):
    """The tokenizer to count with: the named model's, else the default model's if pulled, else None
    (statistics then count characters)."""
    from tuneforge.models.load import load_tokenizer

    try:
        return load_tokenizer(model or get_settings().default_model)
    except TuneforgeError as exc:
        if model:  # the user asked for this one explicitly
            raise
        if not quiet:
            err_console.print(f"[yellow]note:[/] {exc} Statistics are in characters.")
        return None


def _validate(path: Path, fmt, mapping, model, template, max_len, preview, quiet) -> ValidationReport:
    from tuneforge.data.templates import resolve_chat_template

    loaded = load_records(path, fmt, mapping)
    tokenizer = stats_tokenizer(model, quiet) if loaded.records else None
    chat_template = resolve_chat_template(tokenizer, template) if tokenizer is not None else None
    with stage_progress(not quiet and len(loaded.records) >= 2000) as progress:
        return build_report(
            loaded,
            tokenizer,
            chat_template,
            max_len,
            preview,
            progress=lambda done, total: progress("tokenize", done, total),
        )


def print_report(report: ValidationReport) -> None:
    d = report.to_dict()
    status = "[green]valid[/]" if d["valid"] else "[red]invalid[/]"
    console.print(
        f"[bold]{d['path']}[/]: format [bold]{d['format'] or '?'}[/] ({d['kind'] or '?'}), "
        f"{d['records']} records — {status}"
    )
    for p in report.loaded.errors[:50]:
        console.print(f"  [red]error[/] {p}", highlight=False, soft_wrap=True)
    if len(report.loaded.errors) > 50:
        console.print(f"  … and {len(report.loaded.errors) - 50} more errors (see --json)")
    for p in report.loaded.warnings:
        console.print(f"  [yellow]warning[/] {p}", highlight=False, soft_wrap=True)
    if report.loaded.errors:
        console.print(
            f"fix the {len(report.loaded.errors)} problem(s) above (all of them are listed) and "
            "validate again.",
            highlight=False,
        )
        return
    stats = report.stats
    if stats:
        table = Table("role", "count", "min", "median", "p95", "max", title=f"lengths in {stats['unit']}")
        for role, s in stats["per_role"].items():
            table.add_row(role, *(str(s.get(k, "")) for k in ("count", "min", "median", "p95", "max")))
        if "sequence" in stats:
            s = stats["sequence"]
            table.add_row(
                "[bold]whole sequence[/]",
                *(str(s.get(k, "")) for k in ("count", "min", "median", "p95", "max")),
            )
        console.print(table)
        if "over_max_len" in stats:
            console.print(
                f"{stats['over_max_len']} sequence(s) exceed --max-len {stats['max_len']} and would be "
                f"truncated; {stats['trained_tokens']} tokens are trained on."
            )
    for i, pieces in enumerate(report.previews):
        console.print(f"[bold]record {i}[/] as the model sees it ([green]green[/] or ⟦…⟧ = trained on):")
        text = Text()
        for piece, trained in pieces:
            # Without colours (a pipe, a log), trained text is bracketed instead.
            shown = piece if console.is_terminal or not trained else f"⟦{piece}⟧"
            text.append(shown, style="green" if trained else "dim")
        console.print(text)


@app.command()
def validate(
    path: Path = typer.Argument(..., help="A .json/.jsonl/.csv/.parquet file, a folder or a .zip."),
    format: str = typer.Option(None, "--format", help=FORMAT_HELP),
    map: str = typer.Option(None, "--map", help=MAP_HELP),
    model: str = typer.Option(
        None, help="Model whose tokenizer counts tokens (default: the default model, if pulled)."
    ),
    template: str = typer.Option("auto", help="Chat template: auto (the model's), chatml, llama3, …"),
    max_len: int = typer.Option(1024, "--max-len", help="Count sequences longer than this."),
    preview: int = typer.Option(2, help="How many records to show rendered."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Check a dataset without a server: format, problems, token statistics, masked preview."""
    report = _validate(path, format, parse_mapping(map), model, template, max_len, preview, json_out)
    if json_out:
        print_json(report.to_dict())
    else:
        print_report(report)
    if not report.loaded.ok:
        raise typer.Exit(2)


@app.command()
def create(
    path: Path = typer.Argument(...),
    name: str = typer.Option(None, help="Name (default: file stem)."),
    format: str = typer.Option(None, "--format", help=FORMAT_HELP),
    map: str = typer.Option(None, "--map", help=MAP_HELP),
    json_out: bool = typer.Option(False, "--json"),
):
    """Validate and store a dataset under $TUNEFORGE_HOME/datasets (same content → same id)."""
    mapping = parse_mapping(map)
    loaded = load_records(path, format, mapping)
    if not loaded.ok:
        print_report(ValidationReport(loaded))
        raise typer.Exit(2)
    meta, new = store_dataset(loaded, name, mapping)
    if json_out:
        print_json({**meta, "created_now": new})
    else:
        console.print(
            f"{'stored' if new else 'already stored'}: [bold]{meta['id']}[/] ({meta['name']}, "
            f"{meta['format']}, {meta['records']} records)"
        )


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json")):
    """List stored datasets."""
    items = list_datasets()
    if json_out:
        print_json(items)
        return
    table = Table("id", "name", "format", "kind", "records", "created")
    for m in items:
        table.add_row(m["id"], m["name"], m["format"], m["kind"], str(m["records"]), m["created"])
    console.print(table)


@app.command()
def show(ref: str, json_out: bool = typer.Option(False, "--json")):
    """Show a stored dataset's record."""
    meta = json.loads((find_dataset(ref) / "dataset.json").read_text())
    if json_out:
        print_json(meta)
    else:
        for k, v in meta.items():
            console.print(f"[bold]{k}[/]: {v}", highlight=False)


@app.command()
def preview(
    ref: str,
    n: int = typer.Option(3, "-n", help="How many records."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Print the first canonical records of a stored dataset."""
    records = read_stored_records(find_dataset(ref))[:n]
    if json_out:
        print_json(records)
    else:
        for r in records:
            console.print_json(json.dumps(r, ensure_ascii=False))


@app.command()
def rm(ref: str):
    """Remove a stored dataset."""
    console.print(f"removed {remove_dataset(ref)}")
