"""GRPO with TRL's GRPOTrainer, read top to bottom: for each prompt, sample grpo.num_generations
completions with the model being trained, score each with grpo.rewards, and push the policy towards
the completions that beat their group's mean (with a KL term to the starting model when grpo.beta > 0;
with LoRA that model is the base with the adapter switched off, no second copy).

Completions are sampled by transformers' generate in this process (CPU or GPU); with grpo.use_vllm on a
CUDA machine, by vLLM sharing the training GPU. Metrics per step: rewards/<name>/mean and std, reward,
kl (beta > 0), completions/mean_length, entropy.
"""

from __future__ import annotations

from tuneforge.data.templates import resolve_chat_template
from tuneforge.errors import ConfigError, require
from tuneforge.jobs.folder import DATA_READY
from tuneforge.models.load import load_tokenizer
from tuneforge.models.reward import load_reward_model

from .context import RunContext
from .model import load_model
from .preference import carried_over, train_and_save
from .rewards import reward_functions
from .trainer import set_threads, training_arguments


def run(ctx: RunContext) -> dict:
    import torch
    from trl import GRPOConfig, GRPOTrainer

    spec, grpo = ctx.spec, ctx.spec.grpo
    set_threads()
    if grpo.use_vllm:
        if ctx.runtime.device != "cuda":
            raise ConfigError(
                "grpo.use_vllm needs a CUDA GPU; leave it off to sample with the training model."
            )
        require("vllm", "vllm", "grpo.use_vllm")
    tokenizer = load_tokenizer(spec.model, spec.trust_remote_code)
    tokenizer.chat_template = resolve_chat_template(tokenizer, spec.data.chat_template)
    dtype = getattr(torch, ctx.runtime.dtype_name)
    funcs, processors, weights = reward_functions(grpo.rewards, lambda ref: load_reward_model(ref, dtype))
    ctx.folder.event(DATA_READY, train_examples=len(ctx.train_records), val_examples=len(ctx.val_records))

    model, _ = load_model(spec, ctx.runtime, packed=False)
    base = training_arguments(spec, ctx.runtime, ctx.folder.checkpoints, bool(ctx.val_records), packed=False)
    args = GRPOConfig(
        **carried_over(base, GRPOConfig),
        num_generations=grpo.num_generations,
        beta=grpo.beta,
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        reward_weights=weights,
        use_vllm=grpo.use_vllm,
        vllm_mode="colocate",
    )
    return train_and_save(
        GRPOTrainer, args, ctx, tokenizer, model, reward_funcs=funcs, reward_processing_classes=processors
    )
