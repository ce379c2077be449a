"""Evaluate a reward model (method rm) on held-out preference pairs: how often it scores the chosen
answer above the rejected one (pairwise accuracy) and by how much (mean margin)."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.data.store import read_any_dataset
from tuneforge.errors import ConfigError
from tuneforge.models.inference import adapter_display_name
from tuneforge.models.reward import load_reward_model, pairwise_accuracy


def evaluate_reward_model(
    model: str | Path, data: str | Path, output: Path, max_samples=None, batch_size=8, fmt=None, mapping=None
) -> dict:
    records, kind, fmt = read_any_dataset(str(data), fmt, mapping)
    if kind != "preference":
        raise ConfigError(
            f"{data}: a reward model is evaluated on preference pairs (prompt/chosen/rejected); this is "
            f"{fmt} ({kind})."
        )
    pairs = records[:max_samples] if max_samples else records
    rm, tokenizer = load_reward_model(model)
    scores = pairwise_accuracy(rm, tokenizer, pairs, batch_size=batch_size)
    name = adapter_display_name(Path(str(model)).expanduser())  # a job's final/ by its job's name
    results = {"models": {name: scores}, "output": str(output), "data": str(data), "metrics": "pairwise"}
    (output / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results
