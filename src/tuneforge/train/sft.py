"""Supervised fine-tuning (LoRA, QLoRA or full), read top to bottom.

tokenizer + template → tokenized examples → model (+ adapter) → HF Trainer with padding-free batches
→ final/ with the adapter or weights, tokenizer, chat template and stop tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuneforge.data.templates import resolve_chat_template
from tuneforge.errors import DataError
from tuneforge.models.store import resolve_model
from tuneforge.spec import JobSpec

from .collate import PackedCollator, PaddedCollator
from .data import tokenize_records
from .model import Runtime, load_model, load_tokenizer
from .reporting import JobFolder, Reporter, StopFlag
from .trainer import CausalLMTrainer, save_final, set_threads, train_to_end, training_arguments

log = logging.getLogger(__name__)


def run(
    spec: JobSpec,
    folder: JobFolder,
    runtime: Runtime,
    train_records: list[dict],
    val_records: list[dict],
    stop: StopFlag,
    resume: Path | None = None,
    callbacks=(),
    show_bar: bool = False,
) -> dict:
    set_threads()
    tokenizer = load_tokenizer(spec.model, spec.trust_remote_code)
    template = resolve_chat_template(tokenizer, spec.data.chat_template)

    train = tokenize_records(train_records, tokenizer, template, spec)
    val = tokenize_records(val_records, tokenizer, template, spec) if val_records else None
    log.info(
        "train: %d examples, %d tokens (%d trained); validation: %d examples",
        len(train.examples),
        train.tokens,
        train.trained_tokens,
        len(val.examples) if val else 0,
    )
    folder.event(
        "data_ready",
        train_examples=len(train.examples),
        train_tokens=train.tokens,
        trained_tokens=train.trained_tokens,
        truncated=train.truncated,
        dropped=train.dropped,
        val_examples=len(val.examples) if val else 0,
    )

    if not train.examples:
        raise DataError(
            f"no training examples left: all {train.dropped} lost their answers to truncation at "
            f"data.max_len={spec.data.max_len}. Raise data.max_len."
        )
    model, packed = load_model(spec, runtime, spec.data.packing)
    if hasattr(model, "print_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    tokens = {"seen": 0, "trained": 0}
    reporter = Reporter(folder, stop, spec.train.save_total_limit, tokens, show_bar)
    args = training_arguments(spec, runtime, folder.checkpoints, bool(val and val.examples), packed)
    trainer = CausalLMTrainer(
        model=model,
        args=args,
        train_dataset=train.examples,
        eval_dataset=val.examples if val and val.examples else None,
        data_collator=PackedCollator() if packed else PaddedCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        token_counter=tokens,
        callbacks=[reporter, *callbacks],
    )
    metrics = train_to_end(trainer, reporter, folder, stop, resume)
    if stop.reason:
        return metrics
    save_final(model, tokenizer, template, spec, folder.final, resolve_model(spec.model))
    return metrics
