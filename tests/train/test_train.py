"""Training on tiny models: loss falls, the right weights change, resume equals uninterrupted."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import write
from tests.support.trainhelp import losses, run, tiny_spec


class KeepModel(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kw):
        self.model = model


def _initial_state(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "opt", "bloom"])
def test_sft_lora_loss_falls_and_only_adapters_change(tiny_models, memo_data, tmp_path, arch):
    keep = KeepModel()
    result = run(tiny_spec(tiny_models[arch], memo_data), tmp_path / "job", callbacks=[keep])
    curve = losses(result.folder)
    assert sum(curve[-3:]) / 3 < 0.5 * sum(curve[:3]) / 3, curve
    before = _initial_state(tiny_models[arch])
    changed_lora, compared = 0, 0
    for name, param in keep.model.named_parameters():
        if "lora_" in name:
            changed_lora += int(param.abs().sum() > 0 and "lora_B" in name)
            continue
        base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
        if base_name in before:
            torch.testing.assert_close(param.detach(), before[base_name], msg=f"{name} changed")
            compared += 1
    assert changed_lora > 0
    # every saved base tensor was checked (tied weights are saved once, so ≥ rather than ==)
    assert compared >= len(before) > 0
    final = result.folder / "final"
    assert (final / "adapter_model.safetensors").exists() and (final / "chat_template.jinja").exists()
    meta = json.loads((final / "tuneforge.json").read_text())
    assert meta["stop_tokens"] == ["<|im_end|>"]
    events = [json.loads(x)["event"] for x in (result.folder / "events.jsonl").read_text().splitlines()]
    assert events[0] == "started" and events[-1] == "finished"
    assert (result.folder / "loss.svg").exists() and any((result.folder / "tensorboard").iterdir())


def test_full_finetune_changes_base_weights(tiny_llama, memo_data, tmp_path):
    keep = KeepModel()
    result = run(
        tiny_spec(tiny_llama, memo_data, finetuning="full", train__learning_rate=3e-3),
        tmp_path / "j",
        callbacks=[keep],
    )
    curve = losses(result.folder)
    assert curve[-1] < 0.5 * curve[0]
    before = _initial_state(tiny_llama)
    w = dict(keep.model.named_parameters())["model.layers.0.mlp.down_proj.weight"]
    assert not torch.allclose(w.detach(), before["model.layers.0.mlp.down_proj.weight"])
    assert (result.folder / "final" / "model.safetensors").exists()


def test_pretrain_on_text(tiny_llama, tmp_path):
    data = write(
        tmp_path / "t.jsonl",
        "".join(
            json.dumps({"text": t}) + "\n"
            for t in ["The quick brown fox jumps over the lazy dog."] * 4
            + ["今天天气很好。中国的首都是北京。"] * 4
        ),
    )
    result = run(tiny_spec(tiny_llama, data, method="pretrain"), tmp_path / "j")
    curve = losses(result.folder)
    assert curve[-1] < 0.5 * curve[0]


def test_dpo_prefers_chosen(tiny_llama, tmp_path):
    pairs = [
        {"prompt": "What is the capital of France?", "chosen": "Paris", "rejected": "banana seven"},
        {"prompt": "Count to three.", "chosen": "one two three", "rejected": "the lazy dog"},
    ] * 4
    data = write(tmp_path / "p.json", pairs)
    result = run(
        tiny_spec(tiny_llama, data, method="dpo", train__max_steps=15, train__learning_rate=5e-3),
        tmp_path / "j",
    )
    curve = losses(result.folder)
    assert curve[0] == pytest.approx(0.6931, abs=0.01)  # log 2: policy equals reference at the start
    assert curve[-1] < 0.3, curve
    assert (result.folder / "final" / "adapter_model.safetensors").exists()


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_equals_uninterrupted(tiny_llama, memo_data, tmp_path):
    spec = tiny_spec(
        tiny_llama,
        memo_data,
        train__max_steps=8,
        train__save_steps=4,
        train__learning_rate=3e-3,
        train__scheduler="cosine",
        lora__dropout=0.1,
        data__val_fraction=0.25,
    )
    whole = run(spec, tmp_path / "whole")
    run(spec, tmp_path / "split", callbacks=[StopAt(4)])
    assert (tmp_path / "split" / "checkpoints" / "step-4").exists()
    resumed = run({**spec, "resume_from": "latest"}, tmp_path / "split")
    a, b = losses(whole.folder), losses(resumed.folder)
    # The split job's metrics hold steps 1-4 from before the stop and 5-8 from after resuming.
    assert len(b) == len(a) == 8
    assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    assert resumed.metrics["eval_loss"] == pytest.approx(whole.metrics["eval_loss"], rel=1e-4)
    # The token counts and the clock go on from the checkpoint: they do not restart from 0 at step 5.
    a, b = _step_records(whole.folder), _step_records(resumed.folder)
    for key in ("tokens_seen", "trained_tokens"):
        assert [m[key] for m in b] == [m[key] for m in a]
    clock = [m["wall_time"] for m in b]
    assert clock == sorted(clock) and clock[4] > clock[3] > 0


def _step_records(folder):
    from tuneforge.jobs.folder import read_all_jsonl

    return [m for m in read_all_jsonl(folder / "metrics.jsonl") if "loss" in m]


def test_half_written_checkpoint_is_never_trusted(tiny_llama, memo_data, tmp_path):
    spec = tiny_spec(tiny_llama, memo_data, train__max_steps=4, train__save_steps=2)
    run(spec, tmp_path / "j", callbacks=[StopAt(2)])
    # What a SIGKILL in the middle of saving step 4 leaves: the trainer's folder, not yet renamed.
    partial = tmp_path / "j" / "checkpoints" / "checkpoint-4"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    with open(tmp_path / "j" / "metrics.jsonl", "a") as fh:  # and a metrics line cut short
        fh.write('{"step": 3, "epoch": 0.7, "lo')
    from tuneforge.train.reporting import JobFolder

    assert JobFolder(tmp_path / "j").resume_path("latest").name == "step-2"
    resumed = run({**spec, "resume_from": "latest"}, tmp_path / "j")
    started = [
        json.loads(x) for x in (resumed.folder / "events.jsonl").read_text().splitlines() if '"started"' in x
    ]
    assert started[-1]["resumed_from"] == "step-2"
    assert not partial.exists()
    assert _step_records(resumed.folder)[-1]["step"] == 4
