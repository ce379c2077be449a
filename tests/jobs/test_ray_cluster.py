"""TUNEFORGE_EXECUTOR=ray with an address that is no URL: a start-up error naming the variable."""

from __future__ import annotations

import pytest

from tuneforge.errors import ConfigError
from tuneforge.settings import Settings


@pytest.mark.parametrize("address", ["http://[::1", "http://127.0.0.1:99999", "http://a b:8265"])
def test_a_ray_address_that_is_no_url_is_a_config_error_naming_the_variable(address):
    from tuneforge.platform.app import make_executor

    settings = Settings(executor="ray", ray_address=address)
    with pytest.raises(ConfigError, match="TUNEFORGE_RAY_ADDRESS=.*cannot reach the Ray cluster's job API"):
        make_executor(settings)


class _SilentDashboard:
    """An HTTP server on 127.0.0.1 that answers Ray's version check (unless ``answer_version`` is False)
    and then takes every other request without ever answering it (a hung dashboard)."""

    def __init__(self, answer_version: bool = True):
        import http.server
        import json
        import threading

        release = self.release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if answer_version and self.path == "/api/version":
                    body = json.dumps({"ray_version": "2.50.0", "version": "4", "session_name": "s"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                release.wait(60)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_dashboard_that_never_answers_neither_hangs_the_start_nor_the_supervisors_poll(monkeypatch):
    """Ray's job client sends its requests without a timeout: a hung dashboard held the control plane's
    start-up, and every tick of the supervisor (each job's and replica's poll), for ever."""
    import time

    pytest.importorskip("ray.job_submission")
    from tuneforge.jobs import ray_executor
    from tuneforge.jobs.executor import Status

    monkeypatch.setattr(ray_executor, "REQUEST_TIMEOUT_S", 0.5)
    silent = _SilentDashboard(answer_version=False)
    try:
        start = time.monotonic()
        with pytest.raises(OSError):
            ray_executor.RayExecutor(silent.url)
        assert time.monotonic() - start < 10
    finally:
        silent.close()
    hung = _SilentDashboard()
    try:
        executor = ray_executor.RayExecutor(hung.url)
        executor._follow("job-1", False, "RUNNING")
        start = time.monotonic()
        assert executor.poll("job-1") == Status(True)  # Ray away for a moment: still running as far as known
        executor.cancel("job-1")  # logged, not raised
        assert time.monotonic() - start < 10
    finally:
        hung.close()
