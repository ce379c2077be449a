"""A training script of your own, in the shape of ChatGLM3's finetune_hf.py: transformers' Trainer with a
peft LoRA on AdvertiseGen-style records ({"content": "类型#裙*…", "summary": "…"}), TensorBoard logging.
Nothing in it knows about tuneforge; `tuneforge jobs submit … -- python finetune_hf.py …` runs it as is.

    python finetune_hf.py DATA_DIR MODEL_DIR configs/lora.yaml

DATA_DIR holds .jsonl files (a dataset stored by tuneforge and mounted into the job keeps the files you
uploaded under files/); checkpoints and TensorBoard files go to $TUNEFORGE_OUTPUT_DIR (or ./output).
"""

import json
import os
import sys
from pathlib import Path

import yaml
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
)


def load_records(data_dir: str) -> list[dict]:
    files = sorted(p for p in Path(data_dir).rglob("*.jsonl") if p.name != "records.jsonl")
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    return [json.loads(line) for line in lines if line.strip()]


def main() -> None:
    data_dir, model_dir, config_path = sys.argv[1:4]
    cfg = yaml.safe_load(Path(config_path).read_text())
    rows = load_records(data_dir)
    print(f"loaded {len(rows)} AdvertiseGen records from {data_dir}", flush=True)
    tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(row: dict) -> dict:
        # the loss is on the answer (and its end-of-turn token) only, as ChatGLM3's script does
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": row["content"]}], add_generation_prompt=True, tokenize=False
        )
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(row["summary"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids, labels = (p + a)[: cfg["max_len"]], ([-100] * len(p) + a)[: cfg["max_len"]]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    train = [encode(r) for r in rows]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **cfg["lora"]))
    model.print_trainable_parameters()
    out = os.environ.get("TUNEFORGE_OUTPUT_DIR", "output")
    # TensorBoard files go under output/runs/ (transformers' default); tuneforge reads their scalars
    args = TrainingArguments(output_dir=out, report_to=["tensorboard"], **cfg["training"])
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    Trainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
    tok.save_pretrained(os.path.join(out, f"checkpoint-{cfg['training']['max_steps']}"))
    print("done", flush=True)


if __name__ == "__main__":
    main()
