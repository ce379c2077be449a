"""KTO's unpaired feedback (prompt/completion/label) is detected, read to TRL's shape, and a record
without a boolean label is named where it is."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write
from tuneforge.data.load import load_records
from tuneforge.data.validate import StatsBuilder
from tuneforge.errors import ConfigError
from tuneforge.spec import parse_spec


def test_prompt_completion_label_is_kto_feedback(tmp_path, tiny_tokenizer):
    rows = [
        {"prompt": "Capital of France?", "completion": "Paris", "label": True, "system": "Be brief."},
        {"prompt": "Capital of France?", "completion": "Rome", "label": False},
    ]
    loaded = load_records(write(tmp_path / "k.json", rows))
    assert loaded.errors == [] and (loaded.format, loaded.kind) == ("kto", "feedback")
    assert loaded.records[0] == {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "completion": [{"role": "assistant", "content": "Paris"}],
        "label": True,
    }
    assert loaded.records[1]["label"] is False
    # the upload's statistics and token previews read feedback records too
    for stats in (StatsBuilder(), StatsBuilder(tiny_tokenizer, tiny_tokenizer.chat_template)):
        for record in loaded.records:
            stats.add(record)


def test_conversation_with_label_and_csv_words(tmp_path):
    # LLaMA-Factory's KTO sets: a conversation whose last turn is the answer, and its kto_tag column
    line = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Go away"},
        ],
        "tag": False,
    }
    path = write(tmp_path / "c.jsonl", json.dumps(line) + "\n")
    loaded = load_records(path, fmt="kto", mapping="label=tag")
    assert loaded.errors == []
    assert loaded.records[0]["prompt"][-1] == {"role": "user", "content": "Bye"}
    assert loaded.records[0]["completion"] == [{"role": "assistant", "content": "Go away"}]
    assert loaded.records[0]["label"] is False
    csv = write(tmp_path / "k.csv", "prompt,completion,label\nQ,A,TRUE\nQ,B,false\n")
    assert [r["label"] for r in load_records(csv).records] == [True, False]


def test_record_without_boolean_label_is_located(tmp_path):
    rows = [
        {"prompt": "Q", "completion": "A", "label": True},
        {"prompt": "Q", "completion": "B"},
        {"prompt": "Q", "completion": "C", "label": "yes"},
        {"prompt": "Q", "completion": "D", "label": 1},
    ]
    loaded = load_records(write(tmp_path / "k.json", rows))
    assert loaded.format == "kto"
    messages = [str(e) for e in loaded.errors]
    assert len(messages) == 3, messages
    assert "record 2 field 'label'" in messages[0] and "got nothing" in messages[0]
    assert "record 3 field 'label'" in messages[1] and "got string 'yes'" in messages[1]
    assert "record 4 field 'label'" in messages[2] and "got int 1" in messages[2]
    assert all("Add label: true|false" in m for m in messages)


def test_methods_take_their_data(tmp_path):
    from tuneforge.train.data import load_spec_records

    feedback = write(tmp_path / "k.json", [{"prompt": "Q", "completion": "A", "label": True}])
    pairs = write(tmp_path / "p.json", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    sft = write(tmp_path / "s.json", [{"instruction": "Q", "output": "A"}])

    def spec(method, data):
        return parse_spec({"method": method, "model": "m", "data": {"train": str(data)}})

    assert load_spec_records(spec("kto", feedback))[0][0]["label"] is True
    assert load_spec_records(spec("kto", pairs))[0][0]["chosen"]  # TRL splits pairs for KTO
    assert load_spec_records(spec("orpo", pairs))[0][0]["rejected"]
    for method, data in (("simpo", feedback), ("kto", sft), ("sft", feedback)):
        with pytest.raises(ConfigError, match=f"method {method} needs"):
            load_spec_records(spec(method, data))
