"""Helpers for control-plane tests: an app per test, admin headers, a model in the store, uploads."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi.testclient import TestClient


def make_client(supervise: bool = False, token_stats: bool = False, **fields) -> TestClient:
    """``fields`` set the platform context's own (``cancel_grace_s=1.0``, ``max_pulls=1``, …)."""
    from tuneforge.platform.app import create_app

    app = create_app(supervise=supervise)
    for key, value in {**fields, "token_stats": token_stats}.items():
        if not hasattr(app.state.platform, key):
            raise TypeError(f"the platform context has no field {key!r}")
        setattr(app.state.platform, key, value)
    client = TestClient(app)
    token = (app.state.platform.home / "admin.token").read_text().strip()
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def fake_model(name: str = "tiny") -> Path:
    """A model record in the store (enough for the API; no weights)."""
    from tuneforge.settings import get_settings

    folder = get_settings().models_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.json").write_text(json.dumps({"name": name, "kind": "base", "source": "test"}))
    return folder


def store_model(folder: Path, name: str = "tiny") -> str:
    """A real (tiny) model imported into the store, as `tuneforge models import` does."""
    from tuneforge.models.pull import import_model

    import_model(str(folder), name, lambda *a: None)
    return name


def upload(client: TestClient, filename: str, content: bytes | str, **fields):
    data = content.encode() if isinstance(content, str) else content
    return client.post("/api/v1/datasets", files=[("files", (filename, data))], data=fields)


def wait_state(client: TestClient, job_id: str, states, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s: {job}")


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    """``predicate()``'s first truthy value, polled every 0.2 s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class RunningApp:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a background thread: for tests that
    need a real socket (keep-alive connections, schemathesis)."""

    def __init__(self, app):
        import uvicorn

        from tests.support.servehelp import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )

    def __enter__(self):
        import threading

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 30, "uvicorn")
        assert self.thread.is_alive(), "uvicorn did not start"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def cli_on(client: TestClient, monkeypatch, *args: str):
    """`tuneforge …` with its HTTP client talking to the test app; the result of a command that exited 0."""
    from typer.testing import CliRunner

    from tuneforge.cli import client as cli_client
    from tuneforge.cli.main import app

    def init(self, url=None, token=None, timeout=60.0):
        self.url, self.http = "http://testserver", client

    monkeypatch.setattr(cli_client.Client, "__init__", init)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def job_row(job_id: str, **fields) -> dict:
    """A jobs-table row to insert directly (thousands in one statement, where the API takes minutes), with
    ``fields`` over a finished training job's defaults. Rows inserted together need the same keys."""
    row = dict(
        id=job_id,
        kind="train",
        name=None,
        state="succeeded",
        spec={"model": "tiny"},
        priority=0,
        gpus=0,
        restart_policy="never",
        max_retries=0,
        attempt=1,
        resume_from=None,
        folder="/nonexistent",
        pid=None,
        pid_ticks=None,
        cancel_requested=False,
        step=0,
        max_steps=None,
        latest_metrics={},
        exit_code=None,
        error=None,
        created_at=time.time(),
        started_at=None,
        finished_at=None,
        extra={},
    )
    unknown = set(fields) - set(row)
    if unknown:
        raise TypeError(f"job_row: no column {sorted(unknown)}")
    return {**row, **fields}
