"""Direct preference optimisation with TRL's DPOTrainer (LoRA or full), read top to bottom.

With LoRA the reference model is the base with the adapter switched off, so no second copy is held.
"""

from __future__ import annotations

from tuneforge.data.templates import resolve_chat_template
from tuneforge.jobs.folder import DATA_READY
from tuneforge.models.load import load_tokenizer

from .context import RunContext
from .model import load_model
from .trainer import save_final, set_threads, train_to_end, training_arguments


def run(ctx: RunContext) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    spec = ctx.spec
    set_threads()
    tokenizer = load_tokenizer(spec.model, spec.trust_remote_code)
    tokenizer.chat_template = resolve_chat_template(tokenizer, spec.data.chat_template)
    ctx.folder.event(DATA_READY, train_examples=len(ctx.train_records), val_examples=len(ctx.val_records))

    model, _ = load_model(spec, ctx.runtime, packed=False)
    # The same arguments as SFT, carried over to TRL's config class where it has the field.
    base = training_arguments(spec, ctx.runtime, ctx.folder.checkpoints, bool(ctx.val_records), packed=False)
    shared = {
        k: v
        for k, v in base.to_dict().items()
        if k in DPOConfig.__dataclass_fields__
        and not k.startswith("_")
        and k not in ("train_sampling_strategy", "logging_dir")
    }
    reporter = ctx.reporter()
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(**shared, beta=spec.train.dpo_beta, max_length=spec.data.max_len),
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(ctx.train_records),
        eval_dataset=Dataset.from_list(ctx.val_records) if ctx.val_records else None,
        callbacks=[reporter, *ctx.callbacks],
    )
    metrics = train_to_end(trainer, reporter, ctx)
    if not ctx.stop.reason:
        save_final(trainer.model, tokenizer, tokenizer.chat_template, spec, ctx.folder.final)
    return metrics
