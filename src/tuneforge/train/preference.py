"""What the preference recipes (dpo.py, kto.py, orpo.py, simpo.py) share: TRL's trainer classes, imported
here only, the model and tokenizer they start from, their config carried over from the SFT arguments,
and the run from the trainer to final/.

TRL's trainers take the chat records as they are (prompt/chosen/rejected or prompt/completion/label,
messages lists) and apply the chat template themselves; they tokenize, batch and compute the loss.
"""

from __future__ import annotations

import warnings

from tuneforge.data.templates import resolve_chat_template
from tuneforge.errors import DataError
from tuneforge.jobs.folder import DATA_READY
from tuneforge.models.load import load_tokenizer

from .context import RunContext
from .model import load_model
from .trainer import save_final, set_threads, train_to_end, training_arguments

# The TrainingArguments that TRL's configs set their own way: the samplers they need (KTO's KL term pairs
# neighbours of a fixed-order batch) and TensorBoard's folder (the Reporter writes TensorBoard).
NOT_CARRIED = ("train_sampling_strategy", "logging_dir")


def trl_classes(method: str) -> tuple[type, type]:
    """(Config, Trainer) of TRL for a method. ORPO and CPO (SimPO) live in ``trl.experimental``, whose API
    may change in any release: pyproject.toml pins the TRL these recipes were checked against."""
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)  # the pin stands for it
        if method == "orpo":
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            return ORPOConfig, ORPOTrainer
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOConfig, CPOTrainer


def tokenizer_and_model(ctx: RunContext):
    """The tokenizer with the run's chat template, then (after DATA_READY) the model with its adapter."""
    spec = ctx.spec
    set_threads()
    tokenizer = load_tokenizer(spec.model, spec.trust_remote_code)
    tokenizer.chat_template = resolve_chat_template(tokenizer, spec.data.chat_template)
    ctx.folder.event(DATA_READY, train_examples=len(ctx.train_records), val_examples=len(ctx.val_records))
    model, _ = load_model(spec, ctx.runtime, packed=False)
    return tokenizer, model


def carried_over(base, config_cls: type) -> dict:
    """The fields of ``base`` (the run's TrainingArguments) that TRL's ``config_cls`` also has; every TRL
    recipe (these, rm.py, grpo.py) builds its config from them."""
    fields = config_cls.__dataclass_fields__
    return {
        k: v
        for k, v in base.to_dict().items()
        if k in fields and not k.startswith("_") and k not in NOT_CARRIED
    }


def trl_config(config_cls: type, ctx: RunContext, **method_fields):
    """TRL's config for the run: the same arguments as SFT, carried over where the config has the field,
    plus the method's own (beta, weights, loss type)."""
    spec = ctx.spec
    base = training_arguments(spec, ctx.runtime, ctx.folder.checkpoints, bool(ctx.val_records), packed=False)
    return config_cls(**carried_over(base, config_cls), max_length=spec.data.max_len, **method_fields)


def train_and_save(trainer_cls: type, config, ctx: RunContext, tokenizer, model, **trainer_fields) -> dict:
    """Train with TRL's trainer, reporting into the job folder; final/ unless the run was stopped. Every
    TRL recipe ends here (these, rm.py, grpo.py: ``trainer_fields`` are a trainer's own, GRPO's rewards)."""
    from datasets import Dataset

    reporter = ctx.reporter()
    trainer = trainer_cls(
        model=model,
        args=config,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(ctx.train_records),
        eval_dataset=Dataset.from_list(ctx.val_records) if ctx.val_records else None,
        callbacks=[reporter, *ctx.callbacks],
        **trainer_fields,
    )
    if len(trainer.train_dataset) == 0:  # TRL drops a row whose prompt fills max_length
        reporter.close()
        raise DataError(
            f"no training examples left: the prompts of all {len(ctx.train_records)} records are "
            f"data.max_len={ctx.spec.data.max_len} tokens or longer (chat template included). Raise "
            "data.max_len."
        )
    metrics = train_to_end(trainer, reporter, ctx)
    if not ctx.stop.reason:
        save_final(trainer.model, tokenizer, tokenizer.chat_template, ctx.spec, ctx.folder.final)
    return metrics
