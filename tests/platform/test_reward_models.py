"""Reward models on the server: listed as kind reward, refused by deployments, and a GRPO job's
reward_model resolved to its folder (or refused where it names no reward model)."""

from __future__ import annotations

import json

from tests.conftest import write
from tests.support.platformhelp import fake_model, make_client, upload


def _register(api, name: str, path) -> None:
    from tuneforge.platform.db import RegisteredModel

    with api.app.state.platform.store.session() as s:
        s.add(RegisteredModel(id=f"rm-{name}", name=name, version=1, base_model="tiny", checkpoint="final",
                              path=str(path), lineage={}))  # fmt: skip


def test_reward_models_are_listed_refused_by_deployments_and_resolved_for_grpo(tmp_path):
    judge = write(tmp_path / "judge" / "tuneforge.json", {"method": "rm", "adapter": True}).parent
    write(judge / "adapter_config.json", {"task_type": "SEQ_CLS"})
    chat = write(tmp_path / "chat" / "tuneforge.json", {"method": "sft", "adapter": True}).parent
    with make_client() as api:
        fake_model("tiny")
        _register(api, "judge", judge)
        _register(api, "chat", chat)
        kinds = {m["name"]: m["kind"] for m in api.get("/api/v1/models/registered").json()["data"]}
        assert kinds == {"judge": "reward", "chat": "generative"}

        r = api.post("/api/v1/deployments", json={"model": "judge"})
        assert r.status_code == 422, r.text
        assert "judge@1 is a reward model" in r.json()["detail"] and "does not generate" in r.json()["detail"]

        prompts = "".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(4))
        assert upload(api, "sums.jsonl", prompts, name="sums").status_code == 201
        body = {"template": "grpo-lora", "model": "tiny", "datasets": ["sums"]}
        rewards = [{"reward_model": "judge"}, {"reward_model": "chat"}, {"reward_model": "nope"}]
        r = api.post("/api/v1/jobs", json={**body, "overrides": {"grpo.rewards": rewards}})
        assert r.status_code == 422, r.text
        problems = {tuple(p["loc"]): p["msg"] for p in r.json()["problems"]}
        assert problems == {
            ("spec", "grpo", "rewards", 1, "model"): "chat@1 is not a reward model (method rm)",
            (
                "spec",
                "grpo",
                "rewards",
                2,
                "model",
            ): "no registered model 'nope': register a job of method rm",
        }
        r = api.post("/api/v1/jobs", json={**body, "overrides": {"grpo.rewards": rewards[:1]}})
        assert r.status_code == 201, r.text
        assert r.json()["spec"]["grpo"]["rewards"][0]["model"] == str(judge)  # the worker reads a folder
