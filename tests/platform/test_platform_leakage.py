"""Duplicates in the API: an upload's report, and a strict job refused (422) before it is queued."""

from __future__ import annotations

import json

from tests.conftest import MEMO
from tests.support.platformhelp import fake_model, make_client, upload


def test_upload_reports_duplicates_and_strict_overlap_is_refused_before_queueing(monkeypatch):
    with make_client() as api:
        fake_model()
        recased = {**MEMO[1], "instruction": MEMO[1]["instruction"].upper()}
        ds = upload(api, "train.json", json.dumps([*MEMO, recased]), name="train").json()
        assert ds["duplicates"]["exact"]["examples"] == [{"record": 5, "same_as": 2}]
        assert any("1 record(s) repeat an earlier one" in w["message"] for w in ds["warnings"])
        unrelated = {"instruction": "Name a primary colour.", "input": "", "output": "Red"}
        upload(api, "eval.json", json.dumps([MEMO[0], unrelated]), name="eval")
        body = {"template": "sft-lora", "model": "tiny", "datasets": ["train"], "validation_dataset": "eval"}
        refused = api.post("/api/v1/jobs", json={**body, "overrides": {"data.eval_overlap.strict": True}})
        assert refused.status_code == 422, refused.text
        [problem] = refused.json()["problems"]
        assert problem["loc"] == ["spec", "data", "eval_overlap"]
        assert "1 of 2 evaluation record(s) (50.0%)" in problem["msg"] and "strict is on" in problem["msg"]
        assert api.get("/api/v1/jobs").json()["data"] == []
        assert api.post("/api/v1/jobs", json=body).status_code == 201  # not strict: it warns when it starts
        # Past IN_REQUEST_RECORDS the request does not read the records: the worker refuses at its start.
        from tuneforge.train import leakage

        monkeypatch.setattr(leakage, "IN_REQUEST_RECORDS", 6)  # train 5 + eval 2 records
        later = api.post("/api/v1/jobs", json={**body, "overrides": {"data.eval_overlap.strict": True}})
        assert later.status_code == 201, later.text
