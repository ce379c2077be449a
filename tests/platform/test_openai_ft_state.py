"""An OpenAI fine-tuning job is ``succeeded`` only with its model registered (issue 16 item 8).

The supervisor's finish is driven directly on a job row whose folder holds a final output: no worker
process, so the race can be made wide (a slow registration) and watched by a polling client.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.platformhelp import make_client
from tuneforge.jobs.reconcile import Outcome


def _running_openai_job(ctx, final: bool = True) -> str:
    from tuneforge.jobs import folder as fmt
    from tuneforge.platform.db import Job

    job_id = "job-0123456789ab"
    folder = Path(ctx.jobs_dir) / job_id
    folder.mkdir(parents=True)
    if final:
        (folder / fmt.FINAL_DIR).mkdir()
    with ctx.store.session() as s:
        s.add(
            Job(
                id=job_id,
                kind="train",
                state="running",
                spec={"model": "tiny", "data": {"train": []}},
                folder=str(folder),
                attempt=1,
                extra={"openai": {"suffix": "memo", "training_file": "file-x"}},
                created_at=time.time(),
                started_at=time.time(),
            )
        )
    return job_id


@pytest.fixture
def api():
    with make_client() as client:
        yield client


def test_succeeded_is_never_seen_without_fine_tuned_model(api, monkeypatch):
    from tuneforge.platform import registry

    ctx = api.app.state.platform
    job_id = _running_openai_job(ctx)

    def slowed(register):
        def slow_register(*args, **kwargs):
            time.sleep(1.0)  # a registration that takes a while: the window a polling client hit
            return register(*args, **kwargs)

        return slow_register

    # both entry points: the hook registers through register_in (the landed code called register)
    monkeypatch.setattr(registry, "register_in", slowed(registry.register_in))
    monkeypatch.setattr(registry, "register", slowed(registry.register))
    finishing = threading.Thread(target=ctx.supervisor._finish, args=(job_id, Outcome("succeeded", None), 0))
    finishing.start()
    seen = []
    while finishing.is_alive() or not seen or seen[-1]["status"] != "succeeded":
        job = api.get(f"/v1/fine_tuning/jobs/ft{job_id}").json()
        seen.append(job)
        assert not (job["status"] == "succeeded" and job["fine_tuned_model"] is None), job
        assert len(seen) < 2000, seen[-1]
        time.sleep(0.01)
    finishing.join()
    assert seen[-1]["fine_tuned_model"] == "ft:tiny:memo:0123456789ab"
    registered = api.get(f"/api/v1/models/registered/{seen[-1]['fine_tuned_model']}")
    assert registered.status_code == 200 and registered.json()["job"] == job_id


def test_a_failed_registration_is_a_failed_job_with_a_message(api):
    ctx = api.app.state.platform
    job_id = _running_openai_job(ctx, final=False)  # nothing to register
    ctx.supervisor._finish(job_id, Outcome("succeeded", None), 0)
    job = api.get(f"/v1/fine_tuning/jobs/ft{job_id}").json()
    assert job["status"] == "failed" and job["fine_tuned_model"] is None
    assert "no final output" in job["error"]["message"]
    assert api.get("/api/v1/models").json()["registered"] == []
