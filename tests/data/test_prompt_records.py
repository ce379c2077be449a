"""GRPO's prompt sets: detected, converted, every bad record located; the grpo spec section's rules."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write
from tuneforge.data.load import load_records
from tuneforge.errors import ConfigError, DataError
from tuneforge.spec import parse_spec


def _lines(path, rows):
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_prompt_sets_are_detected_with_or_without_answers(tmp_path):
    rows = [
        {"prompt": "2+2=", "answer": 4},
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a fruit."},
            ]
        },
        {"prompt": "Capital of France?", "system": "One word."},
    ]
    loaded = load_records(_lines(tmp_path / "p.jsonl", rows))
    assert (loaded.format, loaded.kind, loaded.errors) == ("prompt", "prompt", [])
    assert loaded.records == [
        {"prompt": [{"role": "user", "content": "2+2="}], "answer": "4"},
        {"prompt": rows[1]["prompt"]},
        {
            "prompt": [
                {"role": "system", "content": "One word."},
                {"role": "user", "content": "Capital of France?"},
            ]
        },
    ]
    alone = load_records(_lines(tmp_path / "alone.jsonl", [{"prompt": "x"}] * 3))
    assert (alone.format, len(alone.records)) == ("prompt", 3)


def test_a_prompt_set_without_prompts_is_located(tmp_path):
    rows = [
        {"prompt": "1+1=", "answer": "2"},
        {"answer": "3"},
        {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"prompt": "ok", "answer": ["4"]},
    ]
    loaded = load_records(_lines(tmp_path / "p.jsonl", rows), fmt="prompt")
    found = {(p.line, p.field): p.message for p in loaded.errors}
    assert set(found) == {(2, "prompt"), (3, "prompt"), (4, "answer")}, found
    assert "expected 'prompt'" in found[(2, "prompt")] and "--map prompt=COLUMN" in found[(2, "prompt")]
    assert "ends with the user's turn" in found[(3, "prompt")]


def test_a_pair_without_chosen_is_still_a_preference_pair_with_a_located_problem(tmp_path):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "rejected": "b"}]
    loaded = load_records(_lines(tmp_path / "p.jsonl", rows))
    assert loaded.format == "preference"
    assert [(p.line, p.field) for p in loaded.errors] == [(2, "chosen")]


def _grpo(data, **grpo) -> dict:
    return {"template": "grpo-lora", "model": "m", "data": {"train": str(data)}, "grpo": grpo}


def test_exact_match_needs_answers_before_any_model_loads(tmp_path):
    from tuneforge.train.data import load_spec_records

    data = _lines(tmp_path / "p.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b"}, {"prompt": "c"}])
    with pytest.raises(DataError, match=r"2 record\(s\) have no 'answer' \(first: record 2\)"):
        load_spec_records(parse_spec(_grpo(data)))
    train, _ = load_spec_records(parse_spec(_grpo(data, rewards=[{"length": 16}])))
    assert len(train) == 3
    pairs = write(tmp_path / "pairs.json", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ConfigError, match="method grpo needs prompts"):
        load_spec_records(parse_spec(_grpo(pairs)))


def test_grpo_rewards_in_short_and_long_form_and_their_errors(tmp_path):
    spec = parse_spec(
        _grpo(
            "d.jsonl",
            rewards=["exact_match", {"format": "^<answer>", "weight": 0.5}, {"type": "length", "target": 8}],
        )
    )
    assert [(r.type, r.regex, r.target, r.weight) for r in spec.grpo.rewards] == [
        ("exact_match", None, None, 1.0),
        ("format", "^<answer>", None, 0.5),
        ("length", None, 8, 1.0),
    ]
    assert (spec.method, spec.finetuning, spec.learning_rate) == ("grpo", "lora", 5e-5)
    for rewards, said in [
        ([{"type": "format"}], "reward format needs regex"),
        ([{"format": "(unclosed"}], "format regex '(unclosed'"),
        (["nonsense"], "rewards.0.type"),
        ([], "at least 1 item"),
    ]:
        with pytest.raises(ConfigError, match=said.replace("(", r"\(")):
            parse_spec(_grpo("d.jsonl", rewards=rewards))
    with pytest.raises(ConfigError, match="train.batch_size 6 counts completions: make it a multiple of"):
        parse_spec({**_grpo("d.jsonl", num_generations=4), "train": {"batch_size": 6}})
    assert parse_spec({"template": "rm-lora", "model": "m", "data": {"train": "p.json"}}).method == "rm"
