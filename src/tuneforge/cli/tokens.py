"""`tuneforge tokens …`: bearer tokens of the server."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from .client import Client
from .common import console, print_json

app = typer.Typer(help="API tokens (admin or one deployment).", no_args_is_help=True)


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


@app.command()
def create(
    name: str = typer.Option(..., "--name", help="A label."),
    scope: str = typer.Option("admin", "--scope", help="admin or deployment:NAME."),
    expires: str = typer.Option(None, "--expires", help="30d, 12h, 90m, 2w (default: never)."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Create a token; its secret is printed once."""
    t = Client().post("/api/v1/tokens", json={"name": name, "scope": scope, "expires": expires})
    if json_out:
        print_json(t)
        return
    console.print(f"token [bold]{t['id']}[/] ({t['scope']}, expires {_when(t['expires_at'])}):")
    console.print(t["token"], highlight=False, soft_wrap=True)
    console.print("[dim]shown once: keep it now[/]")


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json")):
    """List tokens (never their secrets)."""
    data = Client().get("/api/v1/tokens")["data"]
    if json_out:
        print_json(data)
        return
    table = Table("id", "name", "scope", "created", "expires", "revoked")
    for t in data:
        table.add_row(
            t["id"],
            t["name"],
            t["scope"],
            _when(t["created_at"]),
            _when(t["expires_at"]),
            _when(t["revoked_at"]),
        )
    console.print(table)


@app.command()
def revoke(token: str = typer.Argument(..., help="Token id or name.")):
    """Revoke a token (effective on its next request)."""
    t = Client().delete(f"/api/v1/tokens/{token}")
    console.print(f"revoked {t['id']} ({t['name']})")
