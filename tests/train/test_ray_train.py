"""Ray Train's choice and errors. A whole run with a worker lost mid-run (the group restarts from the
latest step-N checkpoint) is tests/platform/test_ray_executor.py's two-node job, through the API."""

from __future__ import annotations

import pytest

from tests.support.trainhelp import tiny_spec
from tuneforge.jobs import folder as fmt
from tuneforge.spec import parse_spec
from tuneforge.train import ray_train

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


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


def test_the_drivers_stop_request_never_raises_nor_writes_through_a_symlink(tmp_path):
    """The SIGTERM handler wrote the request with write_text: a symlink in its place was followed (the
    target overwritten) and a folder gone raised inside whatever the driver was running."""
    import os
    import signal

    root, target = tmp_path / "job", tmp_path / "elsewhere.txt"
    root.mkdir()
    target.write_text("keep")
    before = signal.getsignal(signal.SIGTERM)
    try:
        ray_train._stop_workers_on_sigterm(root)
        os.kill(os.getpid(), signal.SIGTERM)
        assert (root / fmt.STOP_REQUEST).read_text() == "SIGTERM"
        (root / fmt.STOP_REQUEST).unlink()
        (root / fmt.STOP_REQUEST).symlink_to(target)
        os.kill(os.getpid(), signal.SIGTERM)
        assert target.read_text() == "keep"
        (root / fmt.STOP_REQUEST).unlink()
        root.rmdir()
        os.kill(os.getpid(), signal.SIGTERM)  # no FileNotFoundError out of the handler
    finally:
        signal.signal(signal.SIGTERM, before)
