"""Reward models (method rm): the step-1 loss is RewardTrainer's, the trained model ranks chosen above
rejected, eval reports it, serving refuses it, and GRPO can use it as a reward."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write
from tests.support.trainhelp import losses, run, tiny_spec

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris", "rejected": "banana seven"},
    {"prompt": "Count to three.", "chosen": "one two three", "rejected": "the lazy dog"},
    {"prompt": "Say the code word.", "chosen": "banana seven", "rejected": "one two three"},
    {"prompt": "Give three tips.", "chosen": "Eat well, exercise, sleep.", "rejected": "Paris"},
] * 2
STEPS = 8


@pytest.fixture(scope="module")
def rm_job(tiny_models, tmp_path_factory):
    """One reward model trained on PAIRS (module-wide: each test reads it, none changes it)."""
    root = tmp_path_factory.mktemp("rm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TUNEFORGE_HOME", str(root / "home"))
        from tuneforge.settings import get_settings

        get_settings.cache_clear()
        data = write(root / "pairs.json", PAIRS)
        spec = tiny_spec(
            tiny_models["llama"], data, method="rm", train__max_steps=STEPS, train__learning_rate=5e-3
        )
        result = run(spec, root / "job")
        get_settings.cache_clear()
    return spec, data, result.folder


def test_rm_step1_loss_equals_reward_trainer(rm_job, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    spec, _, folder = rm_job
    model_dir, t = spec["model"], spec["train"]
    set_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    args = RewardConfig(
        output_dir=str(tmp_path / "direct"),
        per_device_train_batch_size=t["batch_size"],
        learning_rate=t["learning_rate"],
        lr_scheduler_type="constant",
        max_steps=1,
        logging_steps=1,
        max_length=spec["data"]["max_len"],
        seed=42,
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL's configs default to bf16 autocast; the spec trains in fp32 on CPU
        save_strategy="no",
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="SEQ_CLS")
    rows = [
        {
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in PAIRS
    ]
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=lora,
    )
    trainer.train()
    direct = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    ours = losses(folder)
    assert len(ours) == STEPS
    assert ours[0] == pytest.approx(direct, rel=1e-4)


def test_rm_ranks_chosen_above_rejected_and_eval_reports_it(rm_job, tmp_path):
    from tuneforge.evaluate.run import evaluate_model
    from tuneforge.models.reward import is_reward_model

    _, data, folder = rm_job
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    curve = [m["accuracy"] for m in logged if "accuracy" in m]
    print("training accuracy per step:", curve)
    final = folder / "final"
    assert is_reward_model(final) and json.loads((final / "tuneforge.json").read_text())["method"] == "rm"
    results = evaluate_model(str(final), data, output=tmp_path / "eval")
    scores = results["models"]["job"]  # a job's final/ is named after its job folder
    print("eval:", scores)
    assert results["metrics"] == "pairwise" and scores["samples"] == len(PAIRS)
    assert scores["pairwise_accuracy"] >= 0.75 > 0.5  # chance is 0.5
    first_margin = next(m["margin"] for m in logged if "margin" in m)
    assert scores["mean_margin"] > 2 * max(first_margin, 0.1)  # the gap it learned, not the random head's
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["models"]["job"] == scores


def test_a_reward_model_is_not_served(rm_job):
    from tuneforge.errors import ConfigError
    from tuneforge.models.inference import load_for_serving

    with pytest.raises(ConfigError, match="is a reward model .* does not generate"):
        load_for_serving(rm_job[2] / "final", load_weights=False)


def test_grpo_scores_with_the_reward_model(rm_job, tiny_llama, tmp_path):
    prompts = write(
        tmp_path / "prompts.jsonl", "".join(json.dumps({"prompt": p["prompt"]}) + "\n" for p in PAIRS)
    )
    rewards = [{"reward_model": str(rm_job[2] / "final")}, {"length": 4, "weight": 0.5}]
    spec = tiny_spec(
        tiny_llama,
        prompts,
        method="grpo",
        train__max_steps=1,
        grpo={"rewards": rewards, "num_generations": 2, "max_completion_length": 4},
    )
    result = run(spec, tmp_path / "job")
    step = json.loads((result.folder / "metrics.jsonl").read_text().splitlines()[0])
    assert {"rewards/reward_model/mean", "rewards/length/mean", "reward"} <= set(step)
    assert step["reward"] == pytest.approx(
        step["rewards/reward_model/mean"] + 0.5 * step["rewards/length/mean"], abs=1e-4
    )
