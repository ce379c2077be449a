"""`tuneforge evals …`: evaluations on the server."""

from __future__ import annotations

import typer
from rich.table import Table

from .client import Client
from .common import console, print_json
from .jobs import follow

app = typer.Typer(help="Evaluations on the server: model × dataset → metrics.", no_args_is_help=True)
KEYS = ("eval_loss", "perplexity", "rouge-1", "rouge-2", "rouge-l", "bleu-4")


def show_eval(ev: dict) -> None:
    console.print(f"evaluation [bold]{ev['id']}[/]: {ev['model']} on {ev['dataset']} — {ev['state']}")
    if ev.get("metrics"):
        table = Table("model", *KEYS)
        for name, m in ev["metrics"].items():
            table.add_row(
                name, *(f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k)) for k in KEYS)
            )
        console.print(table)
    if ev.get("error"):
        console.print(f"[red]error[/]: {ev['error'].get('message')}", highlight=False)
        console.print(ev["error"].get("log_tail", ""), markup=False, highlight=False)


@app.command()
def create(
    model: str = typer.Option(..., "--model", help="A registered model (name or name@N) or a base model."),
    dataset: str = typer.Option(..., "--dataset", help="A stored chat dataset."),
    compare_base: bool = typer.Option(False, "--compare-base", help="Also evaluate the base model."),
    max_samples: int = typer.Option(None, "--max-samples"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Wait for the result."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Evaluate a model on a dataset as a worker job."""
    client = Client()
    body = {
        "model": model,
        "dataset": dataset,
        "compare_base": compare_base,
        "max_samples": max_samples,
        "max_new_tokens": max_new_tokens,
    }
    ev = client.post("/api/v1/evaluations", json=body)
    if follow_:
        follow(client, ev["job"], json_out)
        ev = client.get(f"/api/v1/evaluations/{ev['id']}")
    if json_out:
        print_json(ev)
    else:
        show_eval(ev)
    if follow_ and ev["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def show(eval_id: str, json_out: bool = typer.Option(False, "--json")):
    """An evaluation's state and metrics."""
    ev = Client().get(f"/api/v1/evaluations/{eval_id}")
    if json_out:
        print_json(ev)
    else:
        show_eval(ev)
