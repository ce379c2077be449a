"""Kahneman-Tversky optimisation with TRL's KTOTrainer (LoRA or full), read top to bottom.

Data: single answers labelled good or bad (prompt/completion/label, or preference pairs, which TRL
splits into one good and one bad answer each). The loss pushes a good answer's implied reward
(beta × its log-probability ratio to the reference model) above a KL estimate taken from mismatched
prompt/answer pairs of the same batch, and a bad one's below it; desirable/undesirable weights
balance unequal counts. With LoRA the reference model is the base with the adapter switched off.
"""

from __future__ import annotations

from .context import RunContext
from .preference import tokenizer_and_model, train_and_save, trl_classes, trl_config


def run(ctx: RunContext) -> dict:
    config_cls, trainer_cls = trl_classes("kto")
    tokenizer, model = tokenizer_and_model(ctx)
    train = ctx.spec.train
    config = trl_config(
        config_cls,
        ctx,
        beta=train.dpo_beta,
        desirable_weight=train.kto_desirable_weight,
        undesirable_weight=train.kto_undesirable_weight,
    )
    return train_and_save(trainer_cls, config, ctx, tokenizer, model)
