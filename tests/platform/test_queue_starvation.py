"""Queues (platform/queues.py, the supervisor's schedule): a queue held by its quota, with more waiting jobs
than the schedule reads at a time, does not starve the jobs of other queues behind them."""

from __future__ import annotations

import sys

from tests.support.platformhelp import make_client

HELD = 60  # more than one page of the schedule's read (50)


def test_a_full_queue_with_many_waiting_jobs_does_not_starve_another_queue(monkeypatch):
    monkeypatch.setenv("TUNEFORGE_QUEUES", '{"batch": {"cpus": 1}, "interactive": {"cpus": 1}}')
    monkeypatch.setenv("TUNEFORGE_MAX_CONCURRENT_JOBS", "4")
    from tuneforge.platform.db import Job

    with make_client() as client:
        ctx = client.app.state.platform

        def submit(queue: str) -> str:
            body = {"kind": "command", "name": queue, "queue": queue, "command": [sys.executable, "-c", ""]}
            answer = client.post("/api/v1/jobs", json=body)
            assert answer.status_code == 201, answer.text
            return answer.json()["id"]

        batch = [submit("batch") for _ in range(HELD + 1)]
        with ctx.store.session() as s:  # batch's quota is taken: its other jobs wait
            s.get(Job, batch[0]).state = "running"
        late = submit("interactive")
        started: list[str] = []
        monkeypatch.setattr(ctx.supervisor, "_start", started.append)
        ctx.supervisor._schedule()
        assert started == [late]
