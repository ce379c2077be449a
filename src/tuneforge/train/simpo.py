"""Simple preference optimisation with TRL's CPOTrainer (``loss_type="simpo"``), read top to bottom.

Data: preference pairs (prompt/chosen/rejected). The reward of an answer is beta × its mean token
log-probability (length-normalised, no reference model); the loss is -log sigmoid(reward chosen -
reward rejected - simpo_gamma). cpo_alpha > 0 adds an SFT loss on the chosen answers (CPO-SimPO).
"""

from __future__ import annotations

from .context import RunContext
from .preference import tokenizer_and_model, train_and_save, trl_classes, trl_config


def run(ctx: RunContext) -> dict:
    config_cls, trainer_cls = trl_classes("simpo")
    tokenizer, model = tokenizer_and_model(ctx)
    train = ctx.spec.train
    config = trl_config(
        config_cls,
        ctx,
        loss_type="simpo",
        beta=train.dpo_beta,
        simpo_gamma=train.simpo_gamma,
        cpo_alpha=train.cpo_alpha,
    )
    return train_and_save(trainer_cls, config, ctx, tokenizer, model)
