"""A reward model with TRL's RewardTrainer, read top to bottom: preference pairs → the base with a score
head (one output) whose score ranks chosen above rejected (loss −log σ(r_chosen − r_rejected)).

With LoRA the adapter and the new score head train; the rest of the base stays frozen. final/ holds
both, and tuneforge.json says method rm: the registry calls it a model of kind reward, GRPO uses it as a
reward (grpo.rewards: [{reward_model: …}]), ``tuneforge eval`` reports its pairwise accuracy, and
serving refuses it (it scores text, it does not generate).
"""

from __future__ import annotations

from tuneforge.data.templates import resolve_chat_template
from tuneforge.jobs.folder import DATA_READY
from tuneforge.models.load import load_tokenizer

from .context import RunContext
from .model import load_model
from .preference import carried_over, train_and_save
from .trainer import set_threads, training_arguments


def run(ctx: RunContext) -> dict:
    from trl import RewardConfig, RewardTrainer

    spec = ctx.spec
    set_threads()
    tokenizer = load_tokenizer(spec.model, spec.trust_remote_code)
    tokenizer.chat_template = resolve_chat_template(tokenizer, spec.data.chat_template)
    ctx.folder.event(DATA_READY, train_examples=len(ctx.train_records), val_examples=len(ctx.val_records))

    model, _ = load_model(spec, ctx.runtime, packed=False, score_head=True)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at each row's last real token
    base = training_arguments(spec, ctx.runtime, ctx.folder.checkpoints, bool(ctx.val_records), packed=False)
    config = RewardConfig(**carried_over(base, RewardConfig), max_length=spec.data.max_len)
    return train_and_save(RewardTrainer, config, ctx, tokenizer, model)
