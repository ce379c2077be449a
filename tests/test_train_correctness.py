"""Numbers a user compares across runs: accumulation, resume and eval loss mean what they say."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import write
from trainhelp import run, tiny_spec


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
