"""`tuneforge datasets …`"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from tuneforge.data.formats import FORMATS, parse_mapping
from tuneforge.data.load import LoadedDataset
from tuneforge.data.store import (
    find_dataset,
    list_datasets,
    read_stored_records,
    remove_dataset,
    store_path,
)
from tuneforge.data.validate import ValidationReport, validate_path
from tuneforge.errors import ConfigError, DataError, Problem, TuneforgeError
from tuneforge.settings import get_settings

from .common import console, err_console, print_json, shown, stage_progress

app = typer.Typer(help="Datasets: validate locally, store, inspect.", no_args_is_help=True)
log = logging.getLogger(__name__)

FORMAT_HELP = f"Force a format: {', '.join(FORMATS)}."
MAP_HELP = "Map columns, e.g. prompt=content,response=summary[,system=COL,query=COL,history=COL]."
JACCARD_HELP = "Word-shingle Jaccard similarity from which two records are near-duplicates (default 0.8)."


def stats_tokenizer(model: str | None, quiet: bool):
    """The tokenizer to count with: the named model's, else the default model's if pulled, else None
    (statistics then count characters)."""
    from tuneforge.models.file_tokenizer import load_counting_tokenizer

    try:
        return load_counting_tokenizer(model or get_settings().default_model)
    except TuneforgeError as exc:
        if model:  # the user asked for this one explicitly
            raise
        _characters_note(exc, quiet)
        return None


def _default_missing(model: str | None) -> TuneforgeError | None:
    """Why no model counts tokens (no --model, the default one not pulled), or None: checked before reading,
    without importing transformers, so that a dataset without a tokenizer to come is read once."""
    from tuneforge.models.store import resolve_model

    if model:
        return None
    try:
        resolve_model(get_settings().default_model)
    except TuneforgeError as exc:
        return exc
    return None


def _characters_note(exc: TuneforgeError, quiet: bool) -> None:
    if not quiet:
        err_console.print(f"[yellow]note:[/] {shown(exc)} Statistics are in characters.")


def _validate(path: Path, fmt, mapping, model, template, max_len, preview, quiet, jaccard, eval_path):
    from tuneforge.data.templates import resolve_chat_template

    def tokenizer_loader():
        tokenizer = stats_tokenizer(model, quiet)
        return None if tokenizer is None else (tokenizer, resolve_chat_template(tokenizer, template))

    missing = _default_missing(model)
    with stage_progress(not quiet and _large(path)) as progress:
        report = validate_path(
            path, fmt, mapping, None if missing else tokenizer_loader, max_len, preview, progress=progress,
            jaccard=jaccard, eval_path=eval_path,
        )  # fmt: skip
    if missing is not None and report.loaded.ok:  # as the tokenizer's loader says it for a valid dataset
        _characters_note(missing, quiet)
    return report


def _large(path: Path) -> bool:
    """Worth a progress bar: over 4 MiB (about 10,000 records)."""
    try:
        return path.is_dir() or path.stat().st_size > 4 * 2**20
    except OSError:
        return False


def error_report(path: Path, problems: list[Problem]) -> ValidationReport:
    """The report of a dataset refused before it was read (a bad --format or --map)."""
    return ValidationReport(LoadedDataset(path, None, None, errors=problems, count=0))


def print_report(report: ValidationReport) -> None:
    d = report.to_dict()
    status = "[green]valid[/]" if d["valid"] else "[red]invalid[/]"
    console.print(
        f"[bold]{shown(d['path'])}[/]: format [bold]{d['format'] or '?'}[/] ({d['kind'] or '?'}), "
        f"{d['records']} records — {status}",
        highlight=False,
    )
    for p in report.loaded.errors[:50]:
        console.print(f"  [red]error[/] {shown(p)}", highlight=False, soft_wrap=True)
    if len(report.loaded.errors) > 50:
        console.print(f"  … and {len(report.loaded.errors) - 50} more errors (see --json)")
    for p in report.loaded.warnings:
        console.print(f"  [yellow]warning[/] {shown(p)}", highlight=False, soft_wrap=True)
    if report.eval_overlap is not None and not report.eval_overlap["overlapping"]:
        from tuneforge.data.dedup import overlap_message

        console.print(f"  [green]eval overlap[/] {overlap_message(report.eval_overlap)}", highlight=False)
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
            table.add_row(shown(role), *(str(s.get(k, "")) for k in ("count", "min", "median", "p95", "max")))
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
    for i, pieces in enumerate(report.previews, start=1):  # records counted from 1, as lines are
        console.print(f"[bold]record {i}[/] as the model sees it ([green]green[/] or ⟦…⟧ = trained on):")
        text = Text()
        for piece, trained in pieces:
            # Without colours (a pipe, a log), trained text is bracketed instead.
            visible = piece if console.is_terminal or not trained else f"⟦{piece}⟧"
            text.append(visible, style="green" if trained else "dim")
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
    jaccard: float = typer.Option(None, "--jaccard", help=JACCARD_HELP),
    eval_path: Path = typer.Option(
        None, "--eval", help="An evaluation set (same format): how much of it is in PATH."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Check a dataset without a server: format, problems, duplicates (exact and near; with --eval, the
    evaluation set's overlap), token statistics, masked preview."""
    try:
        report = _validate(
            path, format, parse_mapping(map), model, template, max_len, preview, json_out, jaccard, eval_path
        )
    except TuneforgeError as exc:
        if not json_out:
            raise
        # --json promises one JSON object on stdout, for a refused option or a missing model too.
        print_json(error_report(path, [Problem(str(exc))]).to_dict())
        raise typer.Exit(exc.exit_code) from None
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
    try:
        mapping = parse_mapping(map)
        meta, new = store_path(path, name, format, mapping)
    except (DataError, ConfigError) as exc:
        problems = getattr(exc, "problems", None) or [Problem(str(exc))]
        report = error_report(path, problems)
        print_json(report.to_dict()) if json_out else print_report(report)
        raise typer.Exit(2) from None
    if json_out:
        print_json({**meta, "created_now": new})
    else:
        console.print(
            f"{'stored' if new else 'already stored'}: [bold]{meta['id']}[/] ({shown(meta['name'])}, "
            f"{meta['format']}, {meta['records']} records)",
            highlight=False,
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
        table.add_row(m["id"], shown(m["name"]), m["format"], m["kind"], str(m["records"]), m["created"])
    console.print(table)


@app.command()
def show(ref: str, json_out: bool = typer.Option(False, "--json")):
    """Show a stored dataset's record."""
    meta = json.loads((find_dataset(ref) / "dataset.json").read_text())
    if json_out:
        print_json(meta)
    else:
        for k, v in meta.items():
            console.print(f"[bold]{k}[/]: {shown(v)}", highlight=False)


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
    console.print(f"removed {shown(remove_dataset(ref))}", highlight=False)


@app.command()
def dedup(
    ref: str = typer.Argument(..., help="A stored dataset's id or name."),
    into: str = typer.Option(..., "--into", help="Name of the new, deduplicated dataset."),
    jaccard: float = typer.Option(None, "--jaccard", help=JACCARD_HELP),
    json_out: bool = typer.Option(False, "--json"),
):
    """Store a copy of a dataset without its exact and near duplicates (the first of each is kept)."""
    from tuneforge.data.dedup_copy import deduplicated_copy

    meta, report, new = deduplicated_copy(ref, into, jaccard)
    if json_out:
        print_json({**meta, "left_out": report, "stored": new})
        return
    # The store keeps content once: the same records already stored are that dataset, not a new one
    # named ``into`` (said, so that nobody looks for ``into`` afterwards).
    not_new = f"nothing new stored ('{shown(into)}' not created): the same records are stored as"
    what = "stored" if new else not_new
    console.print(
        f"{what} [bold]{meta['id']}[/] ({shown(meta['name'])}, {meta['records']} records): "
        f"{report['exact']['count']} exact and {report['near']['count']} near duplicate(s) of "
        f"{report['records']} left out (Jaccard ≥ {report['jaccard']})",
        highlight=False,
    )
