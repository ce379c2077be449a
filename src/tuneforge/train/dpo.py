"""Direct preference optimisation with TRL's DPOTrainer (LoRA or full), read top to bottom.

With LoRA the reference model is the base with the adapter switched off, so no second copy is held.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuneforge.data.templates import resolve_chat_template
from tuneforge.models.store import resolve_model
from tuneforge.spec import JobSpec

from .model import Runtime, load_model, load_tokenizer
from .reporting import JobFolder, Reporter, StopFlag
from .trainer import save_final, set_threads, train_to_end, training_arguments

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
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    set_threads()
    tokenizer = load_tokenizer(spec.model, spec.trust_remote_code)
    tokenizer.chat_template = resolve_chat_template(tokenizer, spec.data.chat_template)
    folder.event("data_ready", train_examples=len(train_records), val_examples=len(val_records))

    model, _ = load_model(spec, runtime, packed=False)
    base = training_arguments(spec, runtime, folder.checkpoints, bool(val_records), packed=False)
    keep = {
        k: v
        for k, v in base.to_dict().items()
        if k in DPOConfig.__dataclass_fields__
        and not k.startswith("_")
        and k not in ("train_sampling_strategy", "logging_dir")
    }
    args = DPOConfig(**keep, beta=spec.train.dpo_beta, max_length=spec.data.max_len)
    tokens = {"seen": 0, "trained": 0}
    reporter = Reporter(folder, stop, spec.train.save_total_limit, tokens, show_bar)
    trainer = DPOTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(train_records),
        eval_dataset=Dataset.from_list(val_records) if val_records else None,
        callbacks=[reporter, *callbacks],
    )
    metrics = train_to_end(trainer, reporter, folder, stop, resume)
    if stop.reason:
        return metrics
    save_final(
        trainer.model, tokenizer, tokenizer.chat_template, spec, folder.final, resolve_model(spec.model)
    )
    return metrics
