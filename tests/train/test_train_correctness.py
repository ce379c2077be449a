"""Numbers a user compares across runs: accumulation, resume and eval loss mean what they say."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from transformers import TrainerCallback

from tests.conftest import write
from tests.support.trainhelp import run, tiny_spec
from tuneforge.errors import Cancelled


def _metrics(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def no_dropout_models(tiny_models, tmp_path_factory):
    """The tiny models with every dropout probability zeroed (gpt2/opt default to 0.1)."""
    root = tmp_path_factory.mktemp("no-dropout")
    out = {}
    for arch in ("llama", "gpt2", "opt", "bloom"):
        folder = shutil.copytree(tiny_models[arch], root / arch)
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update({k: 0.0 for k, v in cfg.items() if ("drop" in k) and isinstance(v, float)})
        (folder / "config.json").write_text(json.dumps(cfg))
        out[arch] = folder
    return out


# Lengths that differ a lot, so a mean of per-micro-batch means differs from the per-token mean.
UNEVEN = [
    {"instruction": "Say the code word.", "input": "", "output": "banana"},
    {
        "instruction": "What is the capital of France?",
        "input": "",
        "output": "The capital of France is Paris.",
    },
    {"instruction": "Count to three.", "input": "", "output": "one two three four five six seven"},
    {"instruction": "Translate", "input": "今天天气很好", "output": "The weather is nice today."},
]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "bloom"])
def test_accumulation_is_normalised_by_trained_tokens_over_the_window(
    no_dropout_models, tmp_path, monkeypatch, arch
):
    """4×1, 2×2 and 1×4 see the same four examples in step 1: the same loss and gradient.

    gpt2, opt and bloom run as models whose forward takes no loss kwargs (as in transformers 4.x, and
    remote-code models such as ChatGLM3 today): the Trainer then hands no token count to compute_loss.
    """
    if arch != "llama":
        import transformers as tf

        cls = {"gpt2": tf.GPT2LMHeadModel, "opt": tf.OPTForCausalLM, "bloom": tf.BloomForCausalLM}[arch]
        monkeypatch.setattr(cls, "accepts_loss_kwargs", False, raising=False)
    data = write(tmp_path / "uneven.json", UNEVEN)
    first = {}
    for batch, accum in ((4, 1), (2, 2), (1, 4)):
        spec = tiny_spec(
            no_dropout_models[arch],
            data,
            train__max_steps=1,
            train__batch_size=batch,
            train__grad_accum=accum,
        )
        result = run(spec, tmp_path / f"{batch}x{accum}")
        step1 = next(m for m in _metrics(result.folder) if m["step"] == 1 and "loss" in m)
        first[(batch, accum)] = (step1["loss"], step1["grad_norm"])
    loss, norm = first[(4, 1)]
    for key, (other_loss, other_norm) in first.items():
        assert other_loss == pytest.approx(loss, abs=1e-5), (key, first)
        assert other_norm == pytest.approx(norm, abs=1e-5), (key, first)


class TermDuring(TrainerCallback):
    """What `tuneforge jobs cancel` does: SIGTERM while step N runs; the run checkpoints and stops."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class StopAtEpochEnd(TrainerCallback):
    """Stops after the epoch-end checkpoint at step N (the trainer saves; nothing cancels)."""

    def __init__(self, step):
        self.step = step

    def on_epoch_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.parametrize("checkpoints", ["steps", "epoch"])
def test_resume_off_the_logging_boundary_logs_the_uninterrupted_series(
    tiny_llama, memo_data, tmp_path, checkpoints
):
    """Accumulation 2, dropout on, a mid-run checkpoint that is not a logging step.

    steps: save every 3 steps, log every 2, SIGTERM during step 3 (mid-epoch; the real cancel path).
    epoch: the default epoch checkpoints (every 2 steps here), log every 3, stop after the one at step 4.
    """
    spec = tiny_spec(
        tiny_llama,
        memo_data,
        train__max_steps=6,
        train__batch_size=2,
        train__grad_accum=2,
        train__logging_steps=2 if checkpoints == "steps" else 3,
        train__save_steps=3 if checkpoints == "steps" else None,
        train__eval_steps=2 if checkpoints == "steps" else None,
        train__learning_rate=3e-3,
        train__scheduler="cosine",
        lora__dropout=0.1,
        data__val_fraction=0.25,
    )
    whole = run(spec, tmp_path / "whole")
    if checkpoints == "steps":
        with pytest.raises(Cancelled):
            run(spec, tmp_path / "split", callbacks=[TermDuring(3)])
        assert [p.name for p in (tmp_path / "split" / "checkpoints").iterdir()] == ["step-3"]
    else:
        run(spec, tmp_path / "split", callbacks=[StopAtEpochEnd(4)])
        assert (tmp_path / "split" / "checkpoints" / "step-4").exists()
    resumed = run({**spec, "resume_from": "latest"}, tmp_path / "split")

    def series(folder, key):
        return [(m["step"], m[key]) for m in _metrics(folder) if key in m]

    for key in ("loss", "grad_norm", "eval_loss"):
        a, b = series(whole.folder, key), series(resumed.folder, key)
        assert [s for s, _ in b] == [s for s, _ in a], key
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-5, abs=1e-6), key
    assert resumed.metrics["eval_loss"] == pytest.approx(whole.metrics["eval_loss"], rel=1e-5)
