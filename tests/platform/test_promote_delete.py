"""Deleting a deployment while a promotion of it is being evaluated (platform/rollouts.py): the
evaluations it queued are cancelled with it, not left to run for a deployment that is gone."""

from __future__ import annotations

import time

from tests.support.platformhelp import make_client


def test_deleting_a_deployment_mid_promotion_cancels_its_evaluations():
    from tuneforge.platform.db import Deployment, Job

    with make_client() as client:
        ctx = client.app.state.platform
        evals = {"candidate": "job-00000000000a", "live": "job-00000000000b"}
        with ctx.store.session() as s:
            for job_id in evals.values():
                folder = ctx.jobs_dir / job_id
                folder.mkdir(parents=True)
                s.add(Job(id=job_id, kind="eval", state="queued", spec={}, folder=str(folder), extra={}))
            s.add(
                Deployment(
                    id="dep-000000000001", name="shop", model="live@1", base_model="tiny", adapters={},
                    default_model_id="live", aliases={}, state="ready", desired="stopped", replicas=1,
                    options={}, created_at=time.time(), requests=0,
                    rollout={"stage": "evaluating", "model": "c@2", "share": 0.1, "evals": evals},
                )
            )  # fmt: skip
        assert client.delete("/api/v1/deployments/shop").status_code == 204
        assert client.get("/api/v1/deployments/shop").status_code == 404
        states = [client.get(f"/api/v1/jobs/{job_id}").json()["state"] for job_id in evals.values()]
        assert states == ["cancelled", "cancelled"]
