"""KTO, ORPO and SimPO: each recipe's first step is TRL's own, its loss falls on a memorisable set, and
its reward margin (good answers over bad ones) grows."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write
from tests.support.trainhelp import run, tiny_spec
from tuneforge.spec import parse_spec

QUESTIONS = [
    ("What is the capital of France?", "Paris", "banana seven"),
    ("Count to three.", "one two three", "the lazy dog"),
]
PAIRS = [{"prompt": q, "chosen": good, "rejected": bad} for q, good, bad in QUESTIONS] * 4
# KTO's unpaired form of the same answers; good and bad alternate, so every batch of 4 holds both.
FEEDBACK = [
    {"prompt": q, "completion": answer, "label": label}
    for q, good, bad in QUESTIONS
    for answer, label in ((good, True), (bad, False))
] * 2
STEPS = 6
# Per method: the spec's own fields, and TRL's config fields they stand for.
METHODS = {
    "kto": ({"dpo_beta": 0.2, "kto_desirable_weight": 1.5}, {"beta": 0.2, "desirable_weight": 1.5}),
    "orpo": ({"dpo_beta": 0.2}, {"beta": 0.2}),
    "simpo": (
        {"dpo_beta": 2.0, "simpo_gamma": 0.8},
        {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 0.8, "cpo_alpha": 0.0},
    ),
}
STEP_ONE = ("loss", "logps/chosen", "logps/rejected")


def _spec(model, data, method: str, steps: int) -> dict:
    return tiny_spec(
        model,
        data,
        method=method,
        train__max_steps=steps,
        train__learning_rate=1e-2,
        **{f"train__{k}": v for k, v in METHODS[method][0].items()},
    )


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """{method: metrics.jsonl rows} of each method trained STEPS steps on the tiny llama, once a module."""
    root = tmp_path_factory.mktemp("pref")
    pairs, feedback = write(root / "pairs.json", PAIRS), write(root / "feedback.json", FEEDBACK)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TUNEFORGE_HOME", str(root / "home"))
        for method in METHODS:
            data = feedback if method == "kto" else pairs
            result = run(_spec(tiny_models["llama"], data, method, STEPS), root / method)
            assert (result.folder / "final" / "adapter_model.safetensors").exists()
            assert json.loads((result.folder / "final" / "tuneforge.json").read_text())["method"] == method
            out[method] = [json.loads(x) for x in (result.folder / "metrics.jsonl").read_text().splitlines()]
    return out


def _direct_trl_step_one(method: str, model_dir, tmp_path) -> dict:
    """TRL's trainer run by hand, as its documentation shows, for one step with the same settings."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.train.preference import trl_classes

    config_cls, trainer_cls = trl_classes(method)
    if method == "kto":  # TRL's conversational KTO rows
        rows = [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"]}],
                "label": r["label"],
            }
            for r in FEEDBACK
        ]
    else:
        rows = [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in PAIRS
        ]
    args = config_cls(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        max_length=64,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        seed=42,
        **METHODS[method][1],
    )
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(str(model_dir)),
        args=args,
        processing_class=AutoTokenizer.from_pretrained(str(model_dir)),
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"),
    )
    trainer.train()
    return next(h for h in trainer.state.log_history if "loss" in h)


@pytest.mark.parametrize("method", list(METHODS))
def test_step_one_is_trls_own(trained, tiny_models, tmp_path, method):
    ours = trained[method][0]
    theirs = _direct_trl_step_one(method, tiny_models["llama"], tmp_path)
    assert ours["step"] == 1
    for key in STEP_ONE:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_falls_and_margin_grows(trained, method):
    rows = [m for m in trained[method] if "loss" in m]
    assert len(rows) == STEPS
    first, last = rows[:2], rows[-2:]

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    assert mean("loss", last) < 0.8 * mean("loss", first), [r["loss"] for r in rows]
    # rewards/* reach metrics.jsonl (and so the API's and the console's charts) under TRL's names
    assert mean("rewards/margins", last) > mean("rewards/margins", first) + 0.1
    assert mean("rewards/chosen", last) > mean("rewards/rejected", last)


def test_kto_needs_two_rows_a_batch():
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="method kto needs train.batch_size ≥ 2"):
        parse_spec({"method": "kto", "model": "m", "data": {"train": "d.json"}, "train": {"batch_size": 1}})


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_prompts_past_max_len_fail_the_run_instead_of_training_no_step(tiny_llama, tmp_path, method):
    # TRL drops every row whose prompt fills max_length: DPO then stopped on torch's "num_samples=0", KTO
    # (a sequential sampler) "succeeded" after 0 steps
    from tuneforge.errors import DataError

    data = write(tmp_path / "d.json", FEEDBACK if method == "kto" else PAIRS)
    spec = tiny_spec(tiny_llama, data, method=method, data__max_len=8)
    with pytest.raises(DataError, match="no training examples left.*data.max_len=8"):
        run(spec, tmp_path / "job")
    events = [json.loads(x) for x in (tmp_path / "job" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "failed"


def test_templates_and_fields_reach_defaults_and_schema():
    from tuneforge.spec import JobSpec, annotated_defaults, template_spec

    for template, method in (("kto-lora", "kto"), ("orpo-lora", "orpo"), ("simpo-lora", "simpo")):
        spec = template_spec(template, model="m", dataset="d.json")
        assert (spec.method, spec.finetuning, spec.learning_rate) == (method, "lora", 5e-5)
    defaults = annotated_defaults()
    hyper = JobSpec.model_json_schema()["$defs"]["HyperParams"]["properties"]
    for field in ("kto_desirable_weight", "kto_undesirable_weight", "simpo_gamma", "cpo_alpha"):
        assert f"  {field}:" in defaults and hyper[field]["description"]
