"""`tuneforge spec convert`: other tools' training configs as JobSpec files."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import typer

from .common import console, err_console, print_json

app = typer.Typer(help="JobSpec files: convert configs from other tools.", no_args_is_help=True)


def report_conversion(conversion) -> None:
    """The conversion's notes and warnings on stderr, one line each."""
    for note in conversion.notes:
        err_console.print(f"[dim]note:[/] {note}", highlight=False, soft_wrap=True)
    for warning in conversion.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


@app.command()
def convert(
    from_llamafactory: str = typer.Option(
        ...,
        "--from-llamafactory",
        metavar="FILE|-",
        help="A LLaMA-Factory training YAML or a `llamafactory-cli train …` command line (- reads stdin).",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Write the JobSpec here (default: print it)."),
    strict: bool = typer.Option(False, "--strict", help="Unknown or unconverted keys are errors."),
    json_out: bool = typer.Option(False, "--json", help="Print spec, notes and warnings as JSON."),
):
    """Convert a LLaMA-Factory config into a JobSpec you can read, keep and run."""
    from tuneforge.convert.llamafactory import load_llamafactory

    conversion = load_llamafactory(from_llamafactory, strict=strict)
    text = conversion.yaml_text()
    if output:
        _write_whole(output, text)
    if json_out:
        print_json(
            {
                "spec": conversion.job_spec().model_dump(mode="json"),
                "notes": conversion.notes,
                "warnings": conversion.warnings,
                "output": str(output) if output else None,
            }
        )
        return
    report_conversion(conversion)
    if output:
        console.print(f"wrote {output}; run it with `tuneforge train {output}`", highlight=False)
    else:
        sys.stdout.write(text)


def _write_whole(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a failure leaves no half-written spec."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
