"""GRPO (method grpo): the built-in rewards, step 1 equal to TRL's GRPOTrainer run directly, and an
exact-match reward that rises on a tiny arithmetic prompt set."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import write
from tests.support.rlhelp import TEMPLATE, digits_model, sums
from tests.support.trainhelp import run, tiny_spec
from tuneforge.train.rewards import exact_match, final_answer, format_reward, length_reward, same_answer


def test_final_answers_and_the_built_in_rewards():
    assert final_answer("so <answer> 42 </answer>") == "42"
    assert final_answer("thus \\boxed{7} and \\boxed{8}") == "8"
    assert final_answer("work\n#### 1,000\n") == "1,000"
    assert same_answer("The sum is 1,000.", "1000") and same_answer("#### 12.0", "12")
    assert not same_answer("3 then 4", "3") and same_answer("  Paris. ", "paris")
    chat = [[{"role": "assistant", "content": "it is 4"}], [{"role": "assistant", "content": "5"}]]
    assert exact_match(chat, ["4", "4"]) == [1.0, 0.0]
    assert format_reward(r"^<answer>\d+</answer>$")(["<answer>3</answer>", "3"]) == [1.0, 0.0]
    assert length_reward(4)(completion_ids=[[1] * 4, [1] * 2, [1] * 12]) == [0.0, -0.5, -2.0]


def _grpo_spec(model, data, steps: int, **grpo) -> dict:
    return tiny_spec(
        model,
        data,
        method="grpo",
        train__max_steps=steps,
        train__batch_size=32,
        train__learning_rate=3e-2,
        data__chat_template=TEMPLATE,
        grpo={"num_generations": 8, "max_completion_length": 1, **grpo},
    )


def test_grpo_exact_match_reward_rises(tmp_path):
    """9 prompts a+b= (a, b < 3), 8 one-token completions each: by chance about 1 in 12 is right."""
    data = write(tmp_path / "sums.json", sums())
    result = run(_grpo_spec(digits_model(tmp_path / "m"), data, steps=10), tmp_path / "job")
    steps = [json.loads(line) for line in (result.folder / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "reward" in s]
    assert {
        "rewards/exact_match/mean",
        "rewards/exact_match/std",
        "completions/mean_length",
        "entropy",
    } <= set(steps[0])
    curve = [s["rewards/exact_match/mean"] for s in steps]
    print("mean exact_match reward per step:", [round(r, 3) for r in curve])
    assert len(curve) == 10
    assert sum(curve[-3:]) / 3 > sum(curve[:3]) / 3 + 0.15, curve
    assert (result.folder / "final" / "adapter_model.safetensors").exists()


class SeedPerStep(TrainerCallback):
    """tuneforge's rule (train/reporting.py, Reporter.on_step_begin): the random numbers of step N (here
    the sampled completions) come from seed × 100003 + N, so a resumed run samples what an uninterrupted
    one would."""

    def on_step_begin(self, args, state, control, **kw):
        torch.manual_seed(args.seed * 100_003 + state.global_step)


def test_grpo_step1_equals_grpo_trainer(tmp_path):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    model_dir = digits_model(tmp_path / "m")
    data = write(tmp_path / "sums.json", sums())
    spec = _grpo_spec(model_dir, data, steps=1, beta=0.04, max_completion_length=2)
    spec["train"]["batch_size"] = 16
    ours = json.loads((run(spec, tmp_path / "job").folder / "metrics.jsonl").read_text().splitlines()[0])

    set_seed(42)  # then the adapter at once, as the recipe does: its A matrices are the same draws
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)
    args = GRPOConfig(
        output_dir=str(tmp_path / "direct"),
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=2,
        beta=0.04,
        learning_rate=3e-2,
        lr_scheduler_type="constant",
        max_steps=1,
        logging_steps=1,
        seed=42,
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL's configs default to bf16 and activation checkpointing; the spec has neither
        gradient_checkpointing=False,
        save_strategy="no",
    )
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in sums()]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[exact_match],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[SeedPerStep()],
    )
    trainer.train()
    direct = trainer.state.log_history[0]
    for key in ("loss", "grad_norm", "reward", "kl", "completions/mean_length", "entropy"):
        assert ours[key] == pytest.approx(direct[key], rel=1e-4, abs=1e-6), key
