"""Supervised fine-tuning (LoRA, QLoRA or full), read top to bottom.

tokenizer + template → tokenized examples → model (+ adapter) → HF Trainer with padding-free batches
→ final/ with the adapter or weights, tokenizer, chat template and stop tokens.
"""

from __future__ import annotations

import logging

from tuneforge.data.templates import resolve_chat_template
from tuneforge.errors import DataError
from tuneforge.jobs.folder import DATA_READY
from tuneforge.models.load import load_tokenizer

from .collate import PackedCollator, PaddedCollator
from .context import RunContext
from .data import tokenize_records
from .model import load_model
from .trainer import CausalLMTrainer, save_final, set_threads, train_to_end, training_arguments

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> dict:
    spec, folder = ctx.spec, ctx.folder
    set_threads()
    tokenizer = load_tokenizer(spec.model, spec.trust_remote_code)
    template = resolve_chat_template(tokenizer, spec.data.chat_template)

    train = tokenize_records(ctx.train_records, tokenizer, template, spec)
    val = tokenize_records(ctx.val_records, tokenizer, template, spec) if ctx.val_records else None
    val_examples = val.examples if val and val.examples else None
    log.info(
        "train: %d examples, %d tokens (%d trained); validation: %d examples",
        len(train.examples),
        train.tokens,
        train.trained_tokens,
        len(val_examples or []),
    )
    folder.event(
        DATA_READY,
        train_examples=len(train.examples),
        train_tokens=train.tokens,
        trained_tokens=train.trained_tokens,
        truncated=train.truncated,
        dropped=train.dropped,
        val_examples=len(val_examples or []),
    )
    if not train.examples:
        raise DataError(
            f"no training examples left: all {train.dropped} lost their answers to truncation at "
            f"data.max_len={spec.data.max_len}. Raise data.max_len."
        )

    model, packed = load_model(spec, ctx.runtime, spec.data.packing)
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    reporter = ctx.reporter()
    trainer = CausalLMTrainer(
        model=model,
        args=training_arguments(spec, ctx.runtime, folder.checkpoints, val_examples is not None, packed),
        train_dataset=train.examples,
        eval_dataset=val_examples,
        data_collator=PackedCollator() if packed else PaddedCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        token_counter=reporter.tokens,
        callbacks=[reporter, *ctx.callbacks],
    )
    metrics = train_to_end(trainer, reporter, ctx)
    if not ctx.stop.reason:
        save_final(model, tokenizer, template, spec, folder.final)
    return metrics
