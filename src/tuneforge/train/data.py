"""From a JobSpec's data section to tokenized train/validation examples."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from tuneforge.data.store import read_any_dataset
from tuneforge.data.tokenize import tokenize_pretrain
from tuneforge.data.tokenize_batch import tokenize_many
from tuneforge.errors import ConfigError, DataError
from tuneforge.spec import DatasetRef, JobSpec

from . import token_cache

log = logging.getLogger(__name__)

KIND_FOR_METHOD = {
    "sft": ("chat",),
    "dpo": ("preference",),
    "kto": ("feedback", "preference"),  # TRL splits a pair into a good and a bad answer
    "orpo": ("preference",),
    "simpo": ("preference",),
    "pretrain": ("text", "chat"),
    "rm": ("preference",),
    "grpo": ("prompt",),
}


NEEDS = {
    "sft": "chat data (alpaca, sharegpt, openai …)",
    "dpo": "preference data (prompt/chosen/rejected)",
    "kto": "answers labelled good or bad (prompt/completion/label: true|false) or preference pairs",
    "orpo": "preference data (prompt/chosen/rejected)",
    "simpo": "preference data (prompt/chosen/rejected)",
    "pretrain": 'text data ({"text": …})',
    "rm": "preference data (prompt/chosen/rejected)",
    "grpo": 'prompts ({"prompt": …, "answer": …})',
}


def kind_problem(method: str, dataset: str, kind: str, fmt: str | None) -> str | None:
    """Why ``method`` cannot train on ``dataset`` of this kind (None when it can): the worker's check, and
    the control plane's before the job waits in the queue."""
    if kind in KIND_FOR_METHOD[method]:
        return None
    needs = NEEDS[method]
    return f"method {method} needs {needs}; {dataset} is {fmt} ({kind}). Change `method` or the dataset."


def _records_for(spec: JobSpec, ref: DatasetRef) -> list[dict]:
    records, kind, fmt = read_any_dataset(ref.path, ref.format, ref.map)
    if why := kind_problem(spec.method, ref.path, kind, fmt):
        raise ConfigError(why)
    records = records[: ref.max_samples] if ref.max_samples else records
    if spec.method == "grpo" and any(r.type == "exact_match" for r in spec.grpo.rewards):
        without = [i for i, r in enumerate(records) if "answer" not in r]
        if without:
            raise DataError(
                f"{ref.path}: {len(without)} record(s) have no 'answer' (first: record {without[0] + 1}); "
                "the exact_match reward compares each completion's final answer with it. Add the answers, "
                "map a column with --map answer=COLUMN, or choose other grpo.rewards."
            )
    return records


def load_spec_records(spec: JobSpec) -> tuple[list[dict], list[dict]]:
    """Training and validation records, checked against the method; before any model is loaded."""
    train = [record for ref in spec.data.train for record in _records_for(spec, ref)]
    if spec.data.validation:
        val = _records_for(spec, spec.data.validation)
    elif spec.data.val_fraction > 0:
        rng = random.Random(spec.train.seed)
        order = list(range(len(train)))
        rng.shuffle(order)
        n_val = max(1, int(len(train) * spec.data.val_fraction))
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    else:
        val = []
    if not train:
        raise DataError("no training records left after the validation split; lower data.val_fraction.")
    return train, val


@dataclass
class TokenizedSplit:
    examples: list[dict] = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0  # examples with no trained tokens left (e.g. the answer was cut off)

    @property
    def tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def trained_tokens(self) -> int:
        return sum(sum(1 for x in e["labels"] if x != -100) for e in self.examples)


def tokenize_records(records: list[dict], tokenizer, template: str, spec: JobSpec) -> TokenizedSplit:
    """The examples of ``records``; from the tokenized cache when a job before tokenized the same."""
    settings = {"max_len": spec.data.max_len, "mask": spec.data.mask, "truncation": spec.data.truncation}
    key = token_cache.cache_key(records, tokenizer, template, settings)
    cached = token_cache.load(key)
    if cached is not None:
        log.info("%d examples from the tokenized cache (%s)", len(cached.examples), key[:12])
        out = TokenizedSplit(cached.examples, cached.truncated, cached.dropped)
    else:
        out = _tokenize(records, tokenizer, template, spec)
        token_cache.store(key, token_cache.CachedExamples(out.examples, out.truncated, out.dropped))
    if out.truncated:
        log.warning("%d sequence(s) longer than max_len=%d were truncated", out.truncated, spec.data.max_len)
    if out.dropped:
        log.warning(
            "%d example(s) had no trained tokens within max_len=%d and were dropped",
            out.dropped,
            spec.data.max_len,
        )
    return out


def _tokenize(records: list[dict], tokenizer, template: str, spec: JobSpec) -> TokenizedSplit:
    out = TokenizedSplit()
    max_len = spec.data.max_len
    chats = [r for r in records if "text" not in r]
    tokenized = iter(tokenize_many(tokenizer, template, chats, max_len, spec.data.mask, spec.data.truncation))
    for r in records:
        if "text" in r:
            # Continual pretraining: long documents are split into max_len chunks, not thrown away.
            whole = tokenize_pretrain(tokenizer, r["text"], None)
            for i in range(0, len(whole.input_ids), max_len):
                chunk = whole.input_ids[i : i + max_len]
                if len(chunk) > 1:
                    out.examples.append({"input_ids": chunk, "labels": list(chunk)})
            continue
        tok = next(tokenized)
        if isinstance(tok, Exception):
            raise tok
        out.truncated += tok.truncated
        if tok.trained == 0:
            out.dropped += 1
            continue
        out.examples.append({"input_ids": tok.input_ids, "labels": tok.labels})
    return out
