"""A training job whose method cannot use its dataset's kind (GRPO on chat data, DPO on a prompt set, KTO on
chat) is refused when it is created, at the dataset's place in the spec, not after it waited in the queue."""

from __future__ import annotations

import json

from tests.support.platformhelp import fake_model, make_client, upload


def test_a_method_and_a_dataset_of_another_kind_are_refused_at_creation():
    with make_client() as client:
        fake_model("tiny")
        for name, record in (("chat", {"instruction": "q", "output": "a"}), ("prompts", {"prompt": "q"})):
            assert upload(client, f"{name}.json", json.dumps([record]), name=name).status_code == 201

        def create(template: str, dataset: str):
            body = {"template": template, "model": "tiny", "datasets": [dataset]}
            return client.post("/api/v1/jobs", json=body)

        for template, dataset, needs in (
            ("grpo-lora", "chat", "method grpo needs prompts"),
            ("kto-lora", "chat", "method kto needs answers labelled good or bad"),
            ("dpo-lora", "prompts", "method dpo needs preference data"),
        ):
            answer = create(template, dataset)
            assert answer.status_code == 422, (template, answer.text)
            problem = answer.json()["problems"][0]
            assert problem["loc"] == ["spec", "data", "train", 0, "path"] and problem["msg"].startswith(needs)
        assert create("grpo-lora", "prompts").status_code == 201
        assert len(client.get("/api/v1/jobs").json()["data"]) == 1  # the refused ones left no job behind
