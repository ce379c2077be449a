"""train.select: the best checkpoint by an eval metric is marked in the job folder (best.json), outlives
the checkpoint rotation, shows in the API's job detail, and is what registering a job takes by default."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest


def _save(reporter, out, step: int) -> None:
    """What the trainer leaves at a save: checkpoint-N with its state, then on_save."""
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    state = SimpleNamespace(global_step=step, is_world_process_zero=True)
    reporter.on_save(SimpleNamespace(output_dir=str(out), world_size=1), state, None)


@pytest.mark.parametrize(("mode", "best"), [("min", "step-4"), ("max", "step-2")])
def test_the_best_checkpoint_is_marked_and_outlives_the_rotation(tmp_path, mode, best):
    from tuneforge.jobs import folder as fmt
    from tuneforge.spec import SelectSpec
    from tuneforge.train.reporting import JobFolder, Reporter, StopFlag

    folder = JobFolder(tmp_path / "job")
    folder.prepare()
    reporter = Reporter(folder, StopFlag(), keep=1, show_bar=False, select=SelectSpec(mode=mode))
    for step, loss in ((2, 3.0), (4, 2.0), (6, 2.5)):
        folder.metric({"step": step, "loss": loss + 0.1})
        folder.metric({"step": step, "eval_loss": loss})  # evaluation comes before the save at a step
        _save(reporter, tmp_path / "job" / "out", step)
    kept = [p.name for _, p in folder.step_checkpoints()]
    assert kept == sorted({best, "step-6"}, key=lambda n: int(n[5:]))  # keep=1, plus the best
    record = fmt.read_best(folder.root)
    assert record["checkpoint"] == best and record["metric"] == "eval_loss" and record["mode"] == mode
    marks = [
        e for e in fmt.read_all_jsonl(folder.root / fmt.EVENTS_FILE) if e.get("event") == fmt.BEST_CHECKPOINT
    ]
    assert marks[-1]["checkpoint"] == best


def test_register_takes_the_best_checkpoint_by_default_and_final_on_request(tmp_path):
    from tests.support.platformhelp import make_client
    from tuneforge.jobs import folder as fmt
    from tuneforge.platform.db import Job

    with make_client() as api:
        ctx = api.app.state.platform
        root = ctx.jobs_dir / "job-0000000000aa"
        for sub in ("final", "checkpoints/step-4", "checkpoints/step-6"):
            (root / sub).mkdir(parents=True)
            (root / sub / "adapter_config.json").write_text("{}")
        fmt.write_best(
            root, {"checkpoint": "step-4", "step": 4, "metric": "eval_loss", "mode": "min", "value": 2}
        )
        with ctx.store.session() as s:
            # a job that wrote best.json selects by a metric (the job list opens best.json only then)
            spec = {"model": "tiny", "train": {"select": "eval_loss"}}
            s.add(Job(id="job-0000000000aa", kind="train", state="succeeded", spec=spec,
                      folder=str(root), created_at=time.time(), extra={}))  # fmt: skip
        job = api.get("/api/v1/jobs/job-0000000000aa").json()
        assert job["best_checkpoint"]["checkpoint"] == "step-4"
        r = api.post("/api/v1/models/register", json={"job": "job-0000000000aa", "name": "pick"})
        assert r.status_code == 201 and r.json()["checkpoint"] == "step-4", r.text
        body = {"job": "job-0000000000aa", "name": "pick", "checkpoint": "final"}
        assert api.post("/api/v1/models/register", json=body).json()["checkpoint"] == "final"
