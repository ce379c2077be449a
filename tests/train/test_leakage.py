"""A job whose evaluation set overlaps its training set: an eval_overlap event when it starts, or (strict)
a refusal before the job folder exists."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("records", ["many", -5, None, True])
def test_a_dataset_count_that_is_not_a_count_leaves_the_strict_check_to_the_worker(
    records, tmp_path, monkeypatch
):
    """The request reads records only when dataset.json bounds them: a string count made the bound a
    TypeError (a 500), a negative one let a dataset of any size be read inside the request."""
    from tuneforge.data import store
    from tuneforge.spec import JobSpec
    from tuneforge.train import leakage

    (tmp_path / "dataset.json").write_text(json.dumps({"records": records}))
    monkeypatch.setattr(store, "find_dataset", lambda ref: tmp_path)

    def read_in_request(spec):
        raise AssertionError("the records were read inside the request")

    monkeypatch.setattr(leakage, "load_spec_records", read_in_request)
    spec = JobSpec.model_validate(
        tiny_spec(
            "tiny",
            "train",
            data__validation={"path": "eval", "max_samples": 3},
            data__eval_overlap={"strict": True},
        )  # fmt: skip
    )
    assert leakage.strict_refusal(spec) is None
