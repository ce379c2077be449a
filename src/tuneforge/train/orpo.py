"""Odds-ratio preference optimisation with TRL's ORPOTrainer (LoRA or full), read top to bottom.

Data: preference pairs (prompt/chosen/rejected). One loss does SFT and preference at once: the
chosen answer's NLL plus beta (ORPO's lambda) × -log sigmoid of the log odds ratio of chosen over
rejected. There is no reference model, so a run needs one forward pass per pair and side.
"""

from __future__ import annotations

from .context import RunContext
from .preference import tokenizer_and_model, train_and_save, trl_classes, trl_config


def run(ctx: RunContext) -> dict:
    config_cls, trainer_cls = trl_classes("orpo")
    tokenizer, model = tokenizer_and_model(ctx)
    config = trl_config(config_cls, ctx, beta=ctx.spec.train.dpo_beta)
    return train_and_save(trainer_cls, config, ctx, tokenizer, model)
