"""`tuneforge eval --predictions FILE [--metrics llamafactory]`: LLaMA-Factory's own per-pair scores
reproduced to 1e-4 without a model; tuneforge's definitions stay the default and differ on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import write
from tests.convert.test_convert_llamafactory import SFT_LORA, convert, lf_dir  # noqa: F401  (lf_dir is a fixture)
from tests.support.clihelp import run_cli
from tests.support.paths import FIXTURES

FIXTURE = json.loads((FIXTURES / "llamafactory_similarity.json").read_text())
PAIRS = FIXTURE["pairs"]


@pytest.fixture
def lf_predictions(tmp_path) -> Path:
    """The fixture's pairs as LLaMA-Factory writes generated_predictions.jsonl."""
    lines = [
        json.dumps({"prompt": f"q{i}", "predict": p["prediction"], "label": p["label"]}, ensure_ascii=False)
        for i, p in enumerate(PAIRS)
    ]
    return write(tmp_path / "generated_predictions.jsonl", "\n".join(lines) + "\n")


def test_llamafactory_definitions_equal_llamafactorys_own_scores(capsys, lf_predictions):
    code, out, err = run_cli(
        capsys, "eval", "--predictions", lf_predictions, "--metrics", "llamafactory", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["format"] == "llamafactory" and result["metrics"] == "llamafactory"
    got = result["pairs"]["predict"]
    assert len(got) == len(PAIRS) == 12
    for mine, theirs in zip(got, PAIRS, strict=True):
        for key, value in theirs["scores"].items():
            assert mine[key] == pytest.approx(value, abs=1e-4), (key, theirs["prediction"], theirs["label"])
    for key, value in FIXTURE["mean"].items():
        assert result["models"]["predict"][key] == pytest.approx(value, abs=1e-4)


def test_tuneforge_definitions_stay_the_default(capsys, lf_predictions):
    code, out, err = run_cli(capsys, "eval", "--predictions", lf_predictions, "--json")
    assert code == 0, err
    means = json.loads(out)["models"]["predict"]
    # word BLEU and rouge-score's ROUGE: the figures the issue quotes for tuneforge's own definitions
    assert round(means["bleu-4"], 2) == 18.77 and round(means["rouge-l"], 2) == 40.31
    code, out, _ = run_cli(capsys, "eval", "--predictions", lf_predictions, "--metrics", "llamafactory")
    assert code == 0 and "llamafactory definitions" in out and "28.9642" in out


def test_tuneforge_predictions_file_scores_each_model(capsys, tmp_path):
    rows = [
        {"prompt": [], "reference": p["label"], "prediction": p["prediction"], "prediction_base": "白色"}
        for p in PAIRS[:4]
    ]
    path = write(tmp_path / "predictions.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    code, out, err = run_cli(capsys, "eval", "--predictions", path, "--metrics", "llamafactory", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["format"] == "tuneforge" and set(result["models"]) == {"prediction", "prediction_base"}
    assert result["pairs"]["prediction"][3]["bleu-4"] == 100.0


def test_bad_predictions_files_are_clear_errors(capsys, tmp_path):
    bad = write(
        tmp_path / "p.jsonl",
        '{"predict": "a", "label": "b"}\n{"predict": 3}\n{"predict": "c", "label": null}\n',
    )
    code, _, err = run_cli(capsys, "eval", "--predictions", bad)
    assert code == 2 and "3 problem(s)" in err  # every problem at once
    assert "line 2" in err and "expected 'label' (string); got nothing" in err and "got int" in err
    assert "line 3" in err
    other = write(tmp_path / "o.jsonl", '{"question": "a", "answer": "b"}\n')
    code, _, err = run_cli(capsys, "eval", "--predictions", other)
    assert code == 2 and "not a predictions file" in err and "generated_predictions.jsonl" in err
    code, _, err = run_cli(capsys, "eval", "--predictions", bad, "--metrics", "bleu")
    assert code == 2 and "tuneforge or llamafactory" in err
    code, _, err = run_cli(capsys, "eval", "--predictions", bad, "some-model")
    assert code == 2 and "no MODEL" in err


def test_conversions_from_llamafactory_choose_its_metrics(lf_dir):  # noqa: F811
    _, spec = convert(SFT_LORA)
    assert spec.eval.metrics == "llamafactory"


def test_a_jobs_final_folder_is_scored_by_its_specs_metrics(tmp_path):
    from tuneforge.evaluate.run import job_metrics

    job = tmp_path / "job"
    (job / "final").mkdir(parents=True)
    (job / "checkpoints" / "step-4").mkdir(parents=True)
    assert job_metrics(job / "final") == "tuneforge"  # no spec: the default
    # The spec is read as the JobSpec it is (spec.load_spec): one that is not a valid spec is no spec.
    (job / "spec.yaml").write_text(yaml.safe_dump({"model": "m", "eval": {"metrics": "llamafactory"}}))
    assert job_metrics(job / "final") == "tuneforge"
    spec = {"model": "m", "data": {"train": "d.jsonl"}, "eval": {"metrics": "llamafactory"}}
    (job / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert job_metrics(job / "final") == "llamafactory"
    assert job_metrics(job / "checkpoints" / "step-4") == "llamafactory"
    assert job_metrics(tmp_path) == "tuneforge" and job_metrics("smollm2-135m-instruct") == "tuneforge"


def test_eval_of_a_model_uses_the_chosen_definitions(capsys, tiny_llama, memo_data, tmp_path):
    from tuneforge.evaluate.metrics import pair_scores

    args = ["eval", tiny_llama, "--data", memo_data, "--max-new-tokens", "4", "--json"]
    code, out, err = run_cli(capsys, *args, "--metrics", "llamafactory", "-o", tmp_path / "lf")
    assert code == 0, err
    result = json.loads(out)
    assert result["metrics"] == "llamafactory"
    rows = [json.loads(line) for line in (tmp_path / "lf" / "predictions.jsonl").read_text().splitlines()]
    scores = pair_scores([r["prediction"] for r in rows], [r["reference"] for r in rows], "llamafactory")
    (metrics,) = result["models"].values()
    assert metrics["bleu-4"] == pytest.approx(sum(s["bleu-4"] for s in scores) / len(scores), abs=1e-4)
