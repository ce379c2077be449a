"""LLaMA-Factory's KTO stage and its ORPO and SimPO preference losses convert to tuneforge's methods
and train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write
from tuneforge.convert.lf_args import read_arguments
from tuneforge.convert.llamafactory import convert_llamafactory
from tuneforge.data.store import read_any_dataset
from tuneforge.errors import ConfigError
from tuneforge.train.run import run_training

DATASET_INFO = {
    "dpo_en_demo": {
        "file_name": "dpo_en_demo.json",
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    # as LLaMA-Factory's data/dataset_info.json lists its kto_en_demo
    "kto_en_demo": {
        "file_name": "kto_en_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    },
    "kto_alpaca": {
        "file_name": "kto_alpaca.json",
        "columns": {"prompt": "q", "response": "a", "kto_tag": "good"},
    },
    "no_tag": {"file_name": "kto_alpaca.json"},
}
PAIR = {
    "conversations": [{"from": "human", "value": "Name a fruit."}],
    "chosen": {"from": "gpt", "value": "An apple."},
    "rejected": {"from": "gpt", "value": "A chair."},
}


def _kto_line(answer: str, label: bool) -> dict:
    turns = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": answer}]
    return {"messages": turns, "label": label}


@pytest.fixture
def lf_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write(data / "dataset_info.json", DATASET_INFO)
    write(data / "dpo_en_demo.json", [PAIR] * 4)
    write(data / "kto_en_demo.json", [_kto_line("An apple.", True), _kto_line("A chair.", False)] * 2)
    write(data / "kto_alpaca.json", [{"q": "Name a fruit.", "a": "A pear.", "good": True}])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _yaml(model: Path, lines: str) -> str:
    return f"""
model_name_or_path: {model}
finetuning_type: lora
lora_target: all
template: qwen
cutoff_len: 256
per_device_train_batch_size: 2
learning_rate: 1.0e-3
max_steps: 2
logging_steps: 1
{lines}"""


def _convert(text: str):
    conversion = convert_llamafactory(read_arguments(text, "cfg.yaml", Path.cwd()), "cfg.yaml")
    return conversion.job_spec()


@pytest.mark.parametrize(
    ("lines", "method"),
    [
        ("stage: kto\npref_beta: 0.2\nkto_chosen_weight: 1.5\ndataset: kto_en_demo", "kto"),
        ("stage: dpo\npref_loss: orpo\npref_beta: 0.2\ndataset: dpo_en_demo", "orpo"),
        ("stage: dpo\npref_loss: simpo\npref_beta: 2.0\nsimpo_gamma: 0.7\ndataset: dpo_en_demo", "simpo"),
    ],
)
def test_llamafactory_preference_config_converts_and_trains(lf_dir, tiny_llama, lines, method):
    spec = _convert(_yaml(tiny_llama, lines))
    assert spec.method == method
    assert spec.train.dpo_beta == (2.0 if method == "simpo" else 0.2)
    if method == "kto":
        assert spec.train.kto_desirable_weight == 1.5
        assert (spec.data.train[0].format, spec.data.train[0].map) == ("kto", {})
    if method == "simpo":
        assert spec.train.simpo_gamma == 0.7
    result = run_training(spec, lf_dir / "job")
    rows = [json.loads(x) for x in (result.folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert all("rewards/margins" in r for r in rows if "loss" in r)


def test_kto_alpaca_columns_and_a_missing_tag(lf_dir, tiny_llama):
    spec = _convert(_yaml(tiny_llama, "stage: kto\ndataset: kto_alpaca"))
    ref = spec.data.train[0]
    assert (ref.format, ref.map) == ("kto", {"prompt": "q", "completion": "a", "label": "good"})
    records, kind, _ = read_any_dataset(ref.path, ref.format, ref.map)
    assert kind == "feedback" and records[0]["completion"][0]["content"] == "A pear."
    with pytest.raises(ConfigError, match="stage kto needs the kto_tag column"):
        _convert(_yaml(tiny_llama, "stage: kto\ndataset: no_tag"))
    with pytest.raises(ConfigError, match="pref_loss 'hinge'"):
        _convert(_yaml(tiny_llama, "stage: dpo\npref_loss: hinge\ndataset: dpo_en_demo"))
