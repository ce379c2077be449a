"""Control-plane errors carry a stable ``code`` and its ``params`` beside the English ``detail``: the console
says them in the user's language (``error.<code>`` / ``problem.<type>`` in its message files)."""

from __future__ import annotations

import json

from tests.support.paths import ROOT
from tests.support.platformhelp import make_client

WEB = ROOT / "src" / "tuneforge" / "web"


def test_errors_carry_a_code_and_params_beside_the_detail():
    with make_client() as api:
        missing = api.get("/api/v1/datasets/ds-nope")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert "ds-nope" in missing.json()["detail"]  # the English text is unchanged
        lr = {"train.epochs": -1}
        spec = api.post(
            "/api/v1/jobs",
            json={"template": "sft-lora", "model": "tiny", "datasets": ["x"], "overrides": lr},
        ).json()
        assert spec["code"] == "invalid_spec", spec
        (problem,) = [p for p in spec["problems"] if p["loc"][-1] == "epochs"]
        assert problem["type"] == "greater_than" and problem["params"] == {"gt": 0.0}, problem
        body = api.post("/api/v1/evaluations", json={"model": "tiny", "dataset": "x", "max_new_tokens": 0})
        body = body.json()
        assert body["code"] == "invalid_request" and body["problems"][0]["params"] == {"ge": 1}, body
        bad = api.post("/api/v1/tokens", json={"name": "x", "scope": "nope"}).json()
        assert bad["code"] == "invalid_config" and bad["params"] == {}, bad
        api.headers.pop("Authorization")
        assert api.get("/api/v1/jobs").json()["code"] == "invalid_token"
        assert api.get("/api/v1/no-such-route").json()["code"] in ("invalid_token", "not_found")
    # every code and pydantic type the console knows has its words in both languages
    en = json.loads((WEB / "i18n" / "en.json").read_text())
    zh = json.loads((WEB / "i18n" / "zh.json").read_text())
    for code in ("not_found", "invalid_spec", "invalid_request", "invalid_config", "invalid_token"):
        assert f"error.{code}" in en and f"error.{code}" in zh
    assert "{gt}" in zh["problem.greater_than"] and "{ge}" in zh["problem.greater_than_equal"]
