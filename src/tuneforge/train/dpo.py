"""Direct preference optimisation with TRL's DPOTrainer (LoRA or full), read top to bottom.

Data: preference pairs (prompt/chosen/rejected). With LoRA the reference model is the base with the
adapter switched off, so no second copy is held.
"""

from __future__ import annotations

from .context import RunContext
from .preference import tokenizer_and_model, train_and_save, trl_classes, trl_config


def run(ctx: RunContext) -> dict:
    config_cls, trainer_cls = trl_classes("dpo")
    tokenizer, model = tokenizer_and_model(ctx)
    config = trl_config(config_cls, ctx, beta=ctx.spec.train.dpo_beta)
    return train_and_save(trainer_cls, config, ctx, tokenizer, model)
