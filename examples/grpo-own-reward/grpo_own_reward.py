"""GRPO with a reward function of your own, as a command job: TRL's GRPOTrainer on a prompt set, your
Python deciding what a good completion is. tuneforge's grpo-lora template offers built-in rewards only
(a spec sent over HTTP never names code to run); a command job runs your code on the same queue, with
its logs, TensorBoard metrics and registry.

    python grpo_own_reward.py DATA_DIR MODEL_DIR [MAX_STEPS]

DATA_DIR holds .jsonl prompt files ({"prompt": "...", "answer": "..."}; a dataset stored by tuneforge
and mounted into the job keeps the files you uploaded under files/). The adapter, checkpoints and
TensorBoard files go to $TUNEFORGE_OUTPUT_DIR (or ./output).
"""

import json
import os
import re
import sys
from pathlib import Path

from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer


def load_prompts(data_dir: str) -> list[dict]:
    files = sorted(p for p in Path(data_dir).rglob("*.jsonl") if p.name != "records.jsonl")
    rows = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line]
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": str(r["answer"])} for r in rows]


def shows_work_then_answers(completions, answer, **_) -> list[float]:
    """Your reward: one float per completion. Here 1 for the right number on the last line, 0.2 more for
    reasoning before it; TRL passes the dataset's other columns (``answer``) by name."""
    scores = []
    for completion, expected in zip(completions, answer, strict=True):
        text = completion[0]["content"]
        lines = [line for line in text.strip().splitlines() if line.strip()]
        numbers = re.findall(r"-?\d+", lines[-1]) if lines else []
        scores.append(float(bool(numbers) and numbers[-1] == expected) + 0.2 * (len(lines) > 1))
    return scores


def main() -> None:
    data_dir, model_dir = sys.argv[1:3]
    max_steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    prompts = load_prompts(data_dir)
    print(f"loaded {len(prompts)} prompts from {data_dir}", flush=True)
    out = os.environ.get("TUNEFORGE_OUTPUT_DIR", "output")
    args = GRPOConfig(
        output_dir=out,
        max_steps=max_steps,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=48,
        learning_rate=5e-5,
        logging_steps=1,
        save_steps=max_steps,
        bf16=False,  # fp32 on a CPU; set it on a GPU that has bf16
        gradient_checkpointing=False,
        report_to=["tensorboard"],  # tuneforge reads these scalars: `tuneforge jobs metrics`
    )
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=[shows_work_then_answers],
        args=args,
        train_dataset=Dataset.from_list(prompts),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.save_model(os.path.join(out, "final"))
    print("done", flush=True)


if __name__ == "__main__":
    main()
