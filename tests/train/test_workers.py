"""resources.workers: several CPU processes train one model with DDP over gloo, as the ranks of one group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import write
from tests.support.rank_train import SaveWeights
from tests.support.trainhelp import run, tiny_spec
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.ranks import run_ranks

RANK_TRAIN = Path(__file__).parents[1] / "support" / "rank_train.py"
# Eight short examples: a global batch of 8 is the whole set at every step, whatever the order the
# sampler hands them out in, so 2 ranks × 4 and 1 rank × 8 take the same gradient.
RECORDS = [{"instruction": f"Code {i}?", "input": "", "output": f"code {i} is {i} bananas"} for i in range(8)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("workers") / "codes.json", RECORDS)


def _spec_file(folder: Path, spec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_two_workers_hold_the_same_weights_as_one_worker_at_twice_the_batch(tiny_models, data, tmp_path):
    weights = tmp_path / "weights"
    (weights / "single").mkdir(parents=True)
    two = tiny_spec(tiny_models["llama"], data, train__max_steps=3, train__batch_size=4, resources__workers=2)
    one = tiny_spec(tiny_models["llama"], data, train__max_steps=3, train__batch_size=8)
    job = tmp_path / "two"
    argv = [sys.executable, str(RANK_TRAIN), str(_spec_file(tmp_path / "s2", two)), str(job), str(weights)]
    assert run_ranks(argv, 2, job) == 0, fmt.tail_lines(fmt.rank_log(job, 1))
    run(one, tmp_path / "one", callbacks=[SaveWeights(weights / "single" / "rank-0.pt")])

    rank0, rank1 = (torch.load(weights / f"rank-{r}.pt") for r in (0, 1))
    (single_run,) = (torch.load(p) for p in (weights / "single").glob("rank-*.pt"))
    assert rank0.keys() == rank1.keys() == single_run.keys() and rank0
    assert any(v.abs().sum() > 0 for k, v in rank0.items() if "lora_B" in k)  # trained: B starts at zero
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # DDP: the ranks never drift apart
        torch.testing.assert_close(rank0[name], single_run[name], atol=2e-5, rtol=1e-4)
    # One rank wrote the job folder, each wrote its own log.
    assert [m["step"] for m in fmt.read_all_jsonl(job / fmt.METRICS_FILE) if "loss" in m] == [1, 2, 3]
    assert (job / fmt.FINAL_DIR / "adapter_config.json").is_file()
    assert fmt.rank_log(job, 0).stat().st_size and fmt.rank_log(job, 1).stat().st_size


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _rank_of(pid: int) -> str | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), None)


def _wait(predicate, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_killed_rank_ends_the_group_and_the_run_resumes_from_its_checkpoint(tiny_models, data, tmp_path):
    spec = tiny_spec(
        tiny_models["llama"],
        data,
        train__max_steps=400,
        train__batch_size=2,
        train__save_steps=2,
        resources__workers=2,
    )
    job = tmp_path / "job"
    cli = [sys.executable, "-m", "tuneforge.cli.main", "train"]
    proc = subprocess.Popen(
        [*cli, str(_spec_file(tmp_path, spec)), "--output", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: fmt.step_checkpoints(job), "the first checkpoint")
        (rank1,) = [p for p in _children(proc.pid) if _rank_of(p) == "1"]
        os.kill(rank1, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.decode()
    assert proc.returncode == 128 + signal.SIGKILL, text
    assert "rank 1 ended with exit code 137; stopping the other ranks" in text
    assert fmt.ending(job) is None or fmt.ending(job)["event"] != fmt.FINISHED
    last = fmt.step_checkpoints(job)[-1][0]
    assert last < 400 and not (job / fmt.FINAL_DIR).exists()
    logged = fmt.rank_log(job, 1).stat().st_size

    resumed = subprocess.run(
        [*cli, str(job / fmt.SPEC_FILE), "--resolved", "--resume", "--set", f"train.max_steps={last + 2}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    events = fmt.read_all_jsonl(job / fmt.EVENTS_FILE)
    started = [e for e in events if e["event"] == fmt.STARTED]
    assert started[-1]["resumed_from"] == fmt.step_name(last)
    assert events[-1]["event"] == fmt.FINISHED
    steps = [m["step"] for m in fmt.read_all_jsonl(job / fmt.METRICS_FILE) if "loss" in m]
    assert steps[-1] == last + 2 and (job / fmt.FINAL_DIR / "adapter_config.json").is_file()
    assert json.loads((job / fmt.FINAL_DIR / "tuneforge.json").read_text())["adapter"] is True
    assert fmt.rank_log(job, 1).stat().st_size > logged  # the resumed rank 1 wrote on in its log
