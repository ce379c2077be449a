"""Evaluate one model (and optionally its base) on a chat dataset: loss, perplexity, ROUGE, BLEU; a reward
model on preference pairs (evaluate/reward.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tuneforge.data.store import read_any_dataset
from tuneforge.data.tokenize import IGNORE_INDEX, tokenize_chat
from tuneforge.errors import ConfigError
from tuneforge.jobs.folder import CHECKPOINTS_DIR, FINAL_DIR, SPEC_FILE, STEP_RE
from tuneforge.models.inference import LoadedModel, adapter_base, load_for_inference, saved_chat_template
from tuneforge.models.reward import is_reward_model
from tuneforge.settings import get_settings
from tuneforge.spec import load_spec

from .generate import generate
from .metrics import check_metrics, text_scores
from .reward import evaluate_reward_model


def eval_loss(
    lm: LoadedModel, conversations: list[list[dict]], max_len: int = 1024, batch_size: int = 8
) -> float:
    """Cross-entropy over assistant tokens, teacher-forced: the sum of token losses / the token count.

    One per-token mean over the whole set (not a mean of per-batch or per-example means), so the figure
    is the same at any batch size and equals what training's evaluation reports.
    """
    import torch
    import torch.nn.functional as F

    template = lm.tokenizer.chat_template  # resolved by load_for_inference
    examples = [tokenize_chat(lm.tokenizer, template, m, max_len) for m in conversations]
    examples = [e for e in examples if e.trained]
    pad = lm.tokenizer.pad_token_id
    total, count = 0.0, 0
    for i in range(0, len(examples), max(1, batch_size)):
        chunk = examples[i : i + batch_size]
        longest = max(len(e.input_ids) for e in chunk)
        # right padding: causal attention keeps every real token's logits as if it ran alone
        ids = torch.tensor([e.input_ids + [pad] * (longest - len(e.input_ids)) for e in chunk])
        labels = torch.tensor([e.labels + [IGNORE_INDEX] * (longest - len(e.labels)) for e in chunk])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (longest - len(e.input_ids)) for e in chunk])
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        total += F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            target.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        ).item()
        count += int((target != IGNORE_INDEX).sum())
    return total / max(1, count)


def job_metrics(model: str | Path | None) -> str:
    """The ``eval.metrics`` the job's spec chose, when ``model`` is a job's final/ or checkpoints/step-N/
    folder (a run converted from LLaMA-Factory scores as LLaMA-Factory does); else ``tuneforge``."""
    path = Path(str(model)).expanduser() if model else None
    if path is None or not path.is_dir():
        return "tuneforge"
    if path.name == FINAL_DIR:
        root = path.parent
    elif STEP_RE.match(path.name) and path.parent.name == CHECKPOINTS_DIR:
        root = path.parent.parent
    else:
        return "tuneforge"
    try:
        return load_spec(root / SPEC_FILE).eval.metrics
    except (OSError, ConfigError):
        return "tuneforge"  # a folder without a readable spec is scored by the default


def _score(
    lm: LoadedModel, conversations, max_new_tokens, batch_size, progress, metrics
) -> tuple[dict, list[str]]:
    prompts = [c[:-1] for c in conversations]
    refs = [c[-1]["content"] for c in conversations]
    loss = eval_loss(lm, conversations, batch_size=batch_size)
    preds = generate(lm, prompts, max_new_tokens, batch_size, on_batch=progress)
    metrics = {
        "eval_loss": round(loss, 6),
        "perplexity": round(math.exp(min(loss, 50)), 4),
        **text_scores(preds, refs, metrics),
        "samples": len(conversations),
    }
    return metrics, preds


def evaluate_model(
    model: str,
    data: str | Path,
    adapter: Path | None = None,
    compare_base: bool = False,
    max_new_tokens: int = 128,
    max_samples: int | None = None,
    batch_size: int = 8,
    output: Path | None = None,
    fmt: str | None = None,
    mapping=None,
    progress=None,
    metrics: str | None = None,
) -> dict:
    """``progress(stage, done, total)``, when given, hears how generation advances (the CLI draws it).
    ``metrics``: the ROUGE/BLEU definitions (evaluate/metrics.py); None: the job spec's, see job_metrics."""
    output = Path(output or get_settings().root / "evals" / time.strftime("eval-%Y%m%d-%H%M%S"))
    if is_reward_model(adapter or model):  # it scores text: pairwise accuracy on preference pairs
        output.mkdir(parents=True, exist_ok=True)
        return evaluate_reward_model(adapter or model, data, output, max_samples, batch_size, fmt, mapping)
    metrics = check_metrics(metrics or job_metrics(adapter or model))
    records, kind, fmt = read_any_dataset(str(data), fmt, mapping)
    if kind != "chat":
        raise ConfigError(f"{data}: evaluation needs chat data with answers; this is {fmt} ({kind}).")
    conversations = [r["messages"] for r in records if r["messages"][-1]["role"] == "assistant"]
    conversations = conversations[:max_samples] if max_samples else conversations
    output.mkdir(parents=True, exist_ok=True)

    candidates = [("model", lambda: load_for_inference(model, adapter))]
    if compare_base:
        ref = Path(str(model))
        fine_tuned = adapter or (ref / "adapter_config.json").exists() or (ref / "tuneforge.json").exists()
        base = adapter_base(adapter or ref) if fine_tuned else model  # a full fine-tune's final/ too
        # A base without a chat template is asked in the format its fine-tuned model was trained on.
        trained = saved_chat_template(model, adapter)
        candidates.insert(0, ("base", lambda: load_for_inference(base, fallback_template=trained)))

    results: dict = {"models": {}, "output": str(output), "data": str(data), "metrics": metrics}
    predictions: dict[str, list[str]] = {}
    for label, load in candidates:
        lm = load()
        stage, done = f"generating ({label})", [0]

        def advance(n: int, stage=stage, done=done) -> None:
            done[0] += n
            if progress:
                progress(stage, done[0], len(conversations))

        scores, preds = _score(lm, conversations, max_new_tokens, batch_size, advance, metrics)
        results["models"][lm.name if label == "model" else f"{lm.name} (base)"] = scores
        predictions[label] = preds
    with open(output / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for i, conv in enumerate(conversations):
            row = {"prompt": conv[:-1], "reference": conv[-1]["content"]}
            row.update(
                {f"prediction_{k}" if k != "model" else "prediction": v[i] for k, v in predictions.items()}
            )
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (output / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results
