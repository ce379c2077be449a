"""A job whose evaluation set overlaps its training set: an eval_overlap event when it starts, or (strict)
a refusal before the job folder exists."""

from __future__ import annotations

import pytest

from tests.conftest import MEMO, write
from tests.support.trainhelp import run, tiny_spec
from tuneforge.errors import DataError
from tuneforge.jobs import folder as fmt
from tuneforge.spec import parse_spec
from tuneforge.train.data import load_spec_records
from tuneforge.train.leakage import check_eval_overlap

UNRELATED = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red"},
    {"instruction": "What is two plus two?", "input": "", "output": "Four"},
]


def test_overlap_warns_in_the_events_and_strict_refuses(tiny_llama, tmp_path):
    train = write(tmp_path / "train.json", MEMO)
    # One exact copy (re-cased), one near (punctuation), two unrelated: half the eval set is in training.
    evaluation = [
        {**MEMO[0], "instruction": MEMO[0]["instruction"].upper()},
        {**MEMO[2], "output": MEMO[2]["output"].replace(".", "!")},
        *UNRELATED,
    ]
    spec = tiny_spec(
        tiny_llama, train, data__validation=str(write(tmp_path / "eval.json", evaluation)), train__max_steps=1
    )
    result = run(spec, tmp_path / "warned")
    events = fmt.read_all_jsonl(result.folder / fmt.EVENTS_FILE)
    events = [e for e in events if e["event"] == fmt.EVAL_OVERLAP]
    assert len(events) == 1
    event = events[0]
    assert (event["eval_records"], event["overlapping"], event["share"]) == (4, 2, 0.5)
    assert event["exact"]["examples"] == [{"eval_record": 1, "train_record": 1}]
    assert [(e["eval_record"], e["train_record"]) for e in event["near"]["examples"]] == [(2, 3)]

    strict = {**spec, "data": {**spec["data"], "eval_overlap": {"strict": True}}}
    with pytest.raises(DataError, match=r"2 of 4 evaluation record\(s\) \(50.0%\).*strict is on"):
        run(strict, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before the job folder was made

    # At the threshold the check passes, strict or not (no second run: the check is what decides).
    check = {"strict": True, "max_share": 0.5}
    allowed = parse_spec({**spec, "data": {**spec["data"], "eval_overlap": check}})
    assert check_eval_overlap(allowed, *load_spec_records(allowed)) is None
