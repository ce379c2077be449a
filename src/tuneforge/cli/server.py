"""`tuneforge server`: the control plane (API, executor, reconciler) in one process."""

from __future__ import annotations

import typer

from .common import console, err_console


def server(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port"),
    log_level: str = typer.Option("info", "--log-level"),
):
    """Run the control plane: REST API (/docs), OpenAI fine-tuning API (/v1), job queue, /metrics."""
    import uvicorn

    from tuneforge.platform.app import create_app

    app = create_app()
    ctx = app.state.platform
    secret = ctx.admin_token_created
    if secret:
        console.print(
            f"admin token (shown once; also written to {ctx.home / 'admin.token'}, mode 0600):",
            highlight=False,
        )
        console.print(secret, highlight=False, soft_wrap=True)
    err_console.print(
        f"tuneforge server on http://{host}:{port} (docs: /docs) — home {ctx.home}, "
        f"database {ctx.store.engine.url.render_as_string(hide_password=True)}, "
        f"{ctx.executor.gpu_count} GPU(s), {ctx.executor.max_concurrent} concurrent job(s)",
        highlight=False,
    )
    # Open live streams (a console following a job's log) would hold a graceful shutdown forever.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3)
