"""The JobSpec as the one schema, and errors that name their fix."""

from __future__ import annotations

import re

import pytest

from tuneforge.errors import MissingExtraError, require
from tuneforge.spec import JobSpec, annotated_defaults, parse_spec, set_dotted, template_spec


def test_missing_extra_names_the_install_command():
    with pytest.raises(MissingExtraError, match=r"pip install 'tuneforge\[qlora\]'"):
        require("surely_not_an_installed_module", "qlora", "QLoRA")


def test_json_schema_documents_every_field():
    schema = JobSpec.model_json_schema()
    hyper = schema["$defs"]["HyperParams"]["properties"]
    assert hyper["scheduler"]["enum"] == ["linear", "cosine", "constant", "constant_with_warmup"]
    missing = [
        name
        for part in ("DataSpec", "LoraSpec", "HyperParams", "Resources")
        for name, field in schema["$defs"][part]["properties"].items()
        if not field.get("description")
    ]
    assert missing == []


def test_templates_and_learning_rate_defaults():
    assert template_spec("sft-full", model="m", dataset="d.json").learning_rate == 2e-5
    assert template_spec("dpo-lora", model="m", dataset="d.json").learning_rate == 5e-5
    spec = parse_spec({"template": "pretrain-lora", "model": "m", "data": {"train": "t.jsonl"}})
    assert spec.method == "pretrain" and spec.data.mask == "all" and spec.learning_rate == 2e-4


def test_set_dotted_parses_values_as_yaml():
    data: dict = {}
    set_dotted(data, "train.learning_rate=1e-4")
    set_dotted(data, "lora.target_modules=[q_proj, v_proj]")
    assert data == {"train": {"learning_rate": 1e-4}, "lora": {"target_modules": ["q_proj", "v_proj"]}}


def test_annotated_defaults_has_a_comment_above_every_setting():
    lines = annotated_defaults().splitlines()
    # "key: value" lines at the top level or in a section (list items sit deeper and are skipped)
    settings = [i for i, line in enumerate(lines) if re.match(r"^(  ){0,2}\w+: ", line)]
    assert len(settings) > 30
    assert [lines[i] for i in settings if not lines[i - 1].lstrip().startswith("#")] == []
