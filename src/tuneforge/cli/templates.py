"""`tuneforge templates …`: the named training recipes."""

from __future__ import annotations

import typer
import yaml
from rich.table import Table

from tuneforge.spec import TEMPLATES, template_spec

from .common import console, print_json

app = typer.Typer(help="Training templates (recipes with defaults).", no_args_is_help=True)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json")):
    """List templates."""
    if json_out:
        print_json({k: v["description"] for k, v in TEMPLATES.items()})
        return
    table = Table("template", "method", "finetuning", "description")
    for name, t in TEMPLATES.items():
        table.add_row(name, t["method"], t["finetuning"], t["description"])
    console.print(table)


@app.command()
def show(name: str, json_out: bool = typer.Option(False, "--json")):
    """Show a template's complete default spec."""
    spec = template_spec(name, model="MODEL", dataset="DATASET")
    data = spec.model_dump(mode="json")
    if json_out:
        print_json(data)
    else:
        console.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
