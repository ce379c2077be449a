"""Ray Train: a multi-process run inside a Ray program trains on a Ray worker group, rank 0 writes the job
folder, and a worker lost mid-run restarts the group from the latest step-N checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from transformers import TrainerCallback

from tests.conftest import MEMO, write
from tests.support.trainhelp import run, tiny_spec
from tuneforge.jobs import folder as fmt
from tuneforge.spec import parse_spec
from tuneforge.train import ray_train

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

STEPS, SAVE_EVERY, KILL_AT = 6, 2, 3


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs (one a worker), a small object store, no dashboard, and no
    OOM killer (it counts the whole machine: the suite's other tests once took it past 95%, and Ray
    killed the workers; the raylet reads this from the environment it starts in)."""
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    ray.init(
        num_cpus=2,
        object_store_memory=100 * 1024 * 1024,
        include_dashboard=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ.pop("RAY_memory_monitor_refresh_ms", None)


class WeightsAndOneKill(TrainerCallback):
    """Each rank saves its trainable weights at the end; rank 1 dies at step KILL_AT once (a marker)."""

    def __init__(self, out: Path):
        self.out = out

    def on_step_end(self, args, state, control, **kw):
        marker = self.out / "killed"
        if os.environ["RANK"] == "1" and state.global_step == KILL_AT and not marker.exists():
            marker.write_text("rank 1 killed")
            os._exit(1)  # a lost worker: no exception, no cleanup, as when its node goes away

    def on_train_end(self, args, state, control, model=None, **kw):
        import torch

        trained = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        torch.save(trained, self.out / f"weights-rank{os.environ['RANK']}.pt")


def test_choice_of_ray_train_needs_several_processes_inside_a_ray_program(tiny_llama, memo_data):
    two = parse_spec(tiny_spec(tiny_llama, memo_data, resources={"workers": 2}))
    one = parse_spec(tiny_spec(tiny_llama, memo_data))
    assert ray_train.wanted(two, {"RAY_ADDRESS": "10.0.0.1:6379"})
    assert not ray_train.wanted(two, {})  # a plain machine: torchrun (launch.py)
    assert not ray_train.wanted(one, {"RAY_ADDRESS": "10.0.0.1:6379"})  # one process trains in place
    assert not ray_train.wanted(two, {"RAY_ADDRESS": "auto", "RANK": "1"})  # a rank never relaunches


def test_inside_a_ray_job_no_torchrun_relaunch(tiny_llama, memo_data, tmp_path):
    """gpus=2 relaunches as two ranks on a plain machine with 2 GPUs; inside a Ray job, Ray Train places
    the ranks (and the GPUs are the cluster's, not this machine's)."""
    from tuneforge.train.launch import distributed_command

    spec = parse_spec(tiny_spec(tiny_llama, memo_data, resources={"gpus": 2}))
    here = distributed_command(spec, ["spec.yaml"], env={}, folder=tmp_path, gpus_here=2)
    assert "tuneforge.jobs.ranks" in here and "--workers=2" in here
    assert distributed_command(spec, ["spec.yaml"], env={"RAY_ADDRESS": "10.0.0.1:6379"}, gpus_here=0) is None


def test_a_workers_own_error_reaches_the_command_line_as_itself():
    """A DataError on rank 1 stays a DataError (exit code 2), not Ray's WorkerGroupError (exit 1)."""
    from ray.train import WorkerGroupError

    from tuneforge.errors import DataError

    bad = DataError("data.json line 4: expected output")
    assert ray_train._worker_error(WorkerGroupError("lost", {0: RuntimeError("gloo"), 1: bad})) is bad
    assert ray_train._worker_error(WorkerGroupError("lost", {0: RuntimeError("gloo")})) is None


def test_a_lost_worker_restarts_the_group_from_its_checkpoint(local_ray, tiny_llama, tmp_path, monkeypatch):
    """2 Ray Train workers; rank 1 is killed after step 3; with max_failures=1 the group restarts from
    step-2 and finishes: both ranks end with the same weights, rank 0 wrote metrics, checkpoints, final/."""
    monkeypatch.setenv("RAY_ADDRESS", local_ray)  # as inside a Ray job
    data = write(tmp_path / "memo.json", MEMO * 2)
    spec = tiny_spec(
        tiny_llama,
        data,
        resources={"workers": 2, "max_failures": 1},
        train__max_steps=STEPS,
        train__save_steps=SAVE_EVERY,
        train__batch_size=2,
    )
    out = tmp_path / "out"
    out.mkdir()
    result = run(spec, tmp_path / "job", callbacks=[WeightsAndOneKill(out)])

    job = result.folder
    assert (out / "killed").exists()
    started = [e for e in fmt.read_all_jsonl(job / fmt.EVENTS_FILE) if e["event"] == fmt.STARTED]
    assert [e["resumed_from"] for e in started] == [None, "step-2"]
    assert fmt.ending(job)["event"] == fmt.FINISHED
    assert (job / fmt.FINAL_DIR / "adapter_model.safetensors").exists()
    assert [n for n, _ in fmt.step_checkpoints(job)][-1] == STEPS
    steps = [
        m["step"] for m in map(json.loads, (job / fmt.METRICS_FILE).read_text().splitlines()) if "loss" in m
    ]
    assert steps[-1] == STEPS and result.metrics.get("train_loss") is not None

    import torch

    rank0, rank1 = (torch.load(out / f"weights-rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
