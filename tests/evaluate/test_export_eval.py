"""Export merges exactly; eval computes loss and text metrics; `tuneforge train` as a user runs it."""

from __future__ import annotations

import json

import pytest
import torch

from tests.support.clihelp import run_cli
from tests.support.trainhelp import run, tiny_spec


@pytest.fixture
def trained_adapter(tiny_llama, memo_data, tmp_path):
    return run(tiny_spec(tiny_llama, memo_data, train__max_steps=10), tmp_path / "job").folder / "final"


def test_export_merge_equals_base_plus_adapter(capsys, trained_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    code, _, err = run_cli(capsys, "models", "export", trained_adapter, "-o", tmp_path / "merged")
    assert code == 0, err
    meta = json.loads((trained_adapter / "tuneforge.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(meta["base_model"])
    with_adapter = PeftModel.from_pretrained(base, str(trained_adapter)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits, atol=1e-4, rtol=1e-4
        )
        # and the adapter did change something, so the comparison means something
        fresh_base = AutoModelForCausalLM.from_pretrained(meta["base_model"]).eval()
        assert not torch.allclose(fresh_base(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
    assert (tmp_path / "merged" / "chat_template.jinja").exists()
    code, _, err = run_cli(capsys, "models", "export", trained_adapter, "-o", tmp_path / "merged")
    assert code == 1 and "not empty" in err


def test_eval_reports_loss_and_text_metrics(capsys, trained_adapter, memo_data, tmp_path):
    code, out, err = run_cli(
        capsys,
        "eval",
        trained_adapter,
        "--data",
        memo_data,
        "--compare-base",
        "--max-new-tokens",
        "8",
        "-o",
        tmp_path / "ev",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    ((tuned_name, tuned),) = [(k, v) for k, v in result["models"].items() if "(base)" not in k]
    ((_, base),) = [(k, v) for k, v in result["models"].items() if "(base)" in k]
    assert tuned["eval_loss"] < base["eval_loss"]  # trained on this very data
    assert set(tuned) >= {"eval_loss", "perplexity", "rouge-1", "rouge-2", "rouge-l", "bleu-4"}
    rows = (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 8 and {"prediction", "prediction_base", "reference"} <= set(json.loads(rows[0]))
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["models"][tuned_name] == tuned


def test_text_metrics_chinese_and_english():
    from tuneforge.evaluate.metrics import segment, text_scores

    words = segment("今天天气很好")
    assert "".join(words) == "今天天气很好" and 2 <= len(words) < 6  # words, not characters
    assert segment("Paris, France.") == ["paris", ",", "france", "."]
    perfect = text_scores(
        ["这款白色上衣简约大方", "Paris is the capital"], ["这款白色上衣简约大方", "Paris is the capital"]
    )
    assert perfect["rouge-1"] == pytest.approx(100) and perfect["bleu-4"] > 90
    wrong = text_scores(["完全不同的内容"], ["这款白色上衣简约大方"])
    assert wrong["rouge-1"] < 20


def test_eval_on_a_stored_dataset(capsys, trained_adapter, memo_data, tmp_path):
    assert run_cli(capsys, "datasets", "create", memo_data, "--name", "memo")[0] == 0
    code, out, err = run_cli(
        capsys,
        "eval",
        trained_adapter,
        "--data",
        "memo",
        "--max-new-tokens",
        "4",
        "--max-samples",
        "2",
        "-o",
        tmp_path / "ev",
        "--json",
    )
    assert code == 0, err
    (metrics,) = json.loads(out)["models"].values()
    assert metrics["samples"] == 2
