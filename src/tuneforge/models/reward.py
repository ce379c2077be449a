"""Reward models (a job of method rm): how to tell one from a model that generates, load one, and score
conversations with it. The check reads small JSON files only, so the control plane can use it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.errors import ConfigError


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_reward_model(path: str | Path) -> bool:
    """A folder that scores text instead of generating it: a reward job's output (tuneforge.json says
    method rm), a sequence-classification adapter, or an HF sequence classifier."""
    folder = Path(str(path)).expanduser()
    if _json(folder / "tuneforge.json").get("method") == "rm":
        return True
    if _json(folder / "adapter_config.json").get("task_type") == "SEQ_CLS":
        return True
    architectures = _json(folder / "config.json").get("architectures") or []
    return any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in architectures)


def refuse_reward_model(path: str | Path, name: str) -> None:
    """A ConfigError for serving ``name`` when it is a reward model: it has no LM head to generate with."""
    if is_reward_model(path):
        raise ConfigError(
            f"{name} is a reward model (method rm): it scores a conversation and does not generate text, so "
            "it cannot be deployed or served. Use it as a GRPO reward (grpo.rewards: [{reward_model: "
            f"{name}}}]) or measure it with `tuneforge eval` on preference pairs."
        )


def load_reward_model(path: str | Path, dtype=None):
    """(model, tokenizer) of a reward model folder; an adapter is merged into its base's score model."""
    from transformers import AutoModelForSequenceClassification

    from .load import load_tokenizer

    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"reward model {str(path)!r}: no such folder; give a reward job's final/ folder (through the "
            "server: a registered reward model's name)."
        )
    if not is_reward_model(folder):
        raise ConfigError(f"{folder}: not a reward model (train one with method rm, template rm-lora).")
    kwargs = {"num_labels": 1, **({"dtype": dtype} if dtype is not None else {})}
    if (folder / "adapter_config.json").is_file():  # the base is the one adapter_config.json names
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
        model = model.merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
    tokenizer = load_tokenizer(folder)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def score(model, tokenizer, conversations: list[list[dict]], max_len: int = 1024, batch_size: int = 8):
    """The reward model's score of each conversation (its chat template applied, as in training)."""
    import torch

    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    scores: list[float] = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[i : i + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_len,
            add_special_tokens=False,
        )
        with torch.inference_mode():
            scores += model(**batch.to(model.device)).logits[:, 0].float().tolist()
    return scores


def pairwise_accuracy(model, tokenizer, pairs: list[dict], batch_size: int = 8) -> dict:
    """How often the chosen answer scores above the rejected one, over preference records."""
    chosen = score(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], batch_size=batch_size)
    rejected = score(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], batch_size=batch_size)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = max(1, len(margins))
    return {
        "pairwise_accuracy": round(sum(m > 0 for m in margins) / n, 6),
        "mean_margin": round(sum(margins) / n, 6),
        "samples": len(margins),
    }
