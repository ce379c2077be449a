"""`tuneforge train` as users and the platform run it: spec errors, signals, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.support.clihelp import run_cli
from tests.support.trainhelp import tiny_spec


def spec_file(tmp_path, spec: dict):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        ({"train": {"warmpu_ratio": 0.1}}, "train.warmpu_ratio: unknown key"),
        ({"finetuning": "qlora"}, "QLoRA (finetuning: qlora) needs a CUDA GPU"),
        ({"method": "dpo"}, "method dpo needs preference data"),
        ({"template": "sft-lorra"}, "unknown template 'sft-lorra'"),
        ({"train": {"precision": "fp16"}}, "fp16 needs a CUDA GPU"),
        ({"resume_from": "step-x"}, "resume_from"),
    ],
)
def test_impossible_specs_fail_before_any_model_loads(
    capsys, tmp_path, tiny_llama, memo_data, change, message
):
    spec = tiny_spec(tiny_llama, memo_data)
    for key, value in change.items():
        spec[key] = value if not isinstance(value, dict) else {**spec.get(key, {}), **value}
    code, _, err = run_cli(capsys, "train", spec_file(tmp_path, spec), "-o", tmp_path / "job")
    assert code == 2, err
    assert message in err.replace("\n", " ")
    assert not (tmp_path / "job").exists()


def test_print_defaults_is_a_valid_spec(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "--print-defaults")
    assert code == 0 and "# LoRA rank." in out
    from tuneforge.spec import parse_spec

    spec = parse_spec(yaml.safe_load(out))
    assert spec.lora.r == 8 and spec.train.precision == "auto"


def test_set_overrides_and_relative_dataset_path(capsys, tmp_path, tiny_llama, memo_data):
    spec = tiny_spec(tiny_llama, memo_data)
    spec["data"]["train"] = [{"path": memo_data.name}]  # relative to the spec file
    path = spec_file(tmp_path, spec)
    code, out, err = run_cli(
        capsys,
        "train",
        path,
        "--set",
        "train.max_steps=3",
        "--set",
        "name=override",
        "-o",
        tmp_path / "job",
        "--json",
    )
    assert code == 0, err
    resolved = yaml.safe_load((tmp_path / "job" / "spec.yaml").read_text())
    assert resolved["train"]["max_steps"] == 3 and resolved["name"] == "override"
    assert resolved["data"]["train"][0]["path"] == str(memo_data.resolve())


def _launch(spec_path, job, home, *extra):
    env = {**os.environ, "TUNEFORGE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "tuneforge.cli.main", "train", str(spec_path), "-o", str(job), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _events(job):
    return [json.loads(x) for x in (job / "events.jsonl").read_text().splitlines()]


def test_sigterm_checkpoints_cancels_and_resumes(tmp_path, tiny_llama, memo_data):
    # 80 steps: stopped at step 5 with ~75 (~1 s idle) to go, and the resume runs only those.
    spec = tiny_spec(tiny_llama, memo_data, train__max_steps=80, train__save_steps=10000)
    path, job = spec_file(tmp_path, spec), tmp_path / "job"
    proc = _launch(path, job, tmp_path / "home")
    metrics = job / "metrics.jsonl"
    assert _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 5, timeout=600)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    events = _events(job)
    assert events[-1]["event"] == "cancelled" and events[-1]["reason"] == "SIGTERM"
    step = events[-1]["step"]
    assert step and (job / "checkpoints" / f"step-{step}").exists()
    assert "--resume" in out
    proc = _launch(job / "spec.yaml", job, tmp_path / "home", "--resume")
    # generous: a loaded machine makes it many times slower
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    started = [e for e in _events(job) if e["event"] == "started"]
    assert started[-1]["resumed_from"] == f"step-{step}"
    assert _events(job)[-1]["event"] == "finished" and (job / "final" / "adapter_model.safetensors").exists()


def test_sigkill_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path, tiny_llama, memo_data):
    # 80 steps: killed ~0.3 s (~20 steps idle) after the first checkpoint at 7, well before the end.
    spec = tiny_spec(tiny_llama, memo_data, train__max_steps=80, train__save_steps=7)
    path, job = spec_file(tmp_path, spec), tmp_path / "job"
    proc = _launch(path, job, tmp_path / "home")
    assert _wait_for(
        lambda: (
            (job / "checkpoints").exists()
            and any(p.name.startswith("step-") for p in (job / "checkpoints").iterdir())
        ),
        timeout=600,
    )
    time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=30)
    kept = sorted(int(p.name[5:]) for p in (job / "checkpoints").iterdir() if p.name.startswith("step-"))
    logged = max(json.loads(x)["step"] for x in (job / "metrics.jsonl").read_text().splitlines())
    assert logged - kept[-1] < 7 + 1
    proc = _launch(path, job, tmp_path / "home", "--resume")
    out, _ = proc.communicate(timeout=600)  # generous: a loaded machine is many times slower
    assert proc.returncode == 0, out
    started = [e for e in _events(job) if e["event"] == "started"]
    assert started[-1]["resumed_from"] == f"step-{kept[-1]}"


def test_a_finished_job_folder_is_not_overwritten(capsys, tmp_path, tiny_llama, memo_data):
    path = spec_file(tmp_path, tiny_spec(tiny_llama, memo_data, train__max_steps=2))
    code, out, _ = run_cli(capsys, "train", path, "-o", tmp_path / "job")
    assert code == 0
    # The closing lines keep their paths whole in a pipe or a job's log (they were wrapped at 80 columns).
    assert f"done: {tmp_path / 'job'}  train_loss=" in out
    assert (
        f"adapter/model: {tmp_path / 'job' / 'final'}   metrics: {tmp_path / 'job' / 'metrics.jsonl'}" in out
    )
    code, _, err = run_cli(capsys, "train", path, "-o", tmp_path / "job")
    assert code == 1 and "already holds a run" in err


def test_out_of_memory_fails_with_the_fixes(capsys, tmp_path, tiny_llama, memo_data, monkeypatch):
    import torch

    from tuneforge.train import sft

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(sft, "run", oom)
    code, _, err = run_cli(
        capsys, "train", spec_file(tmp_path, tiny_spec(tiny_llama, memo_data)), "-o", tmp_path / "job"
    )
    assert code == 1 and "gradient_checkpointing" in err
    failed = _events(tmp_path / "job")[-1]
    assert failed["event"] == "failed" and "train.batch_size" in failed["reason"]


def test_truncated_sequences_are_counted(capsys, tmp_path, tiny_llama, memo_data):
    # The memo records render to 35, 22, 44 and 30 tokens, answers starting at 25, 18, 24 and 20.
    spec = tiny_spec(tiny_llama, memo_data, train__max_steps=1, data__max_len=24)
    code, _, err = run_cli(capsys, "train", spec_file(tmp_path, spec), "-o", tmp_path / "job")
    assert code == 0, err
    ready = next(e for e in _events(tmp_path / "job") if e["event"] == "data_ready")
    assert (ready["truncated"], ready["dropped"], ready["train_examples"]) == (6, 4, 4)
    assert "6 sequence(s) longer than max_len=24 were truncated" in (tmp_path / "job" / "log.txt").read_text()
    spec["data"]["max_len"] = 12
    code, _, err = run_cli(capsys, "train", spec_file(tmp_path, spec), "-o", tmp_path / "job2")
    assert code == 2 and "Raise data.max_len" in err


def test_a_model_that_is_not_there_fails_before_the_job_folder(capsys, tmp_path, memo_data):
    spec = tiny_spec(tmp_path / "nope", memo_data)
    spec["model"] = "smollm2-135m-instruct"
    code, _, err = run_cli(capsys, "train", spec_file(tmp_path, spec), "-o", tmp_path / "job")
    assert code == 2 and "tuneforge models pull smollm2-135m-instruct" in err
    assert not (tmp_path / "job").exists()
