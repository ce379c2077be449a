"""Answer chat prompts in batches with a model loaded by ``tuneforge.models.inference``."""

from __future__ import annotations

from tuneforge.models.inference import (  # noqa: F401  (loaders re-exported for older imports)
    LoadedModel,
    adapter_base,
    ensure_chat_template,
    load_for_inference,
    saved_chat_template,
)


def chat_prompts(lm: LoadedModel, conversations: list[list[dict]]) -> list[str]:
    ensure_chat_template(lm.tokenizer)
    return [
        lm.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
    ]


def generate(
    lm: LoadedModel,
    conversations: list[list[dict]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    on_batch=None,
    repetition_penalty: float | None = None,
) -> list[str]:
    """Answers to each conversation (ending with a user turn), batched with left padding.

    Greedy by default (evaluation wants the same answer each run). With ``repetition_penalty`` (the
    demo answers of quickstart) the model's saved generation settings apply, sampling included, plus
    the penalty, so a tiny model's greedy loops do not hide what training changed.
    """
    import copy

    import torch
    from transformers import GenerationConfig

    if repetition_penalty is None:
        settings = GenerationConfig(do_sample=False)
    else:
        settings = copy.deepcopy(lm.generation) if lm.generation is not None else GenerationConfig()
        settings.repetition_penalty = repetition_penalty
    settings.max_new_tokens = max_new_tokens
    settings.eos_token_id = lm.stop_ids or None
    settings.pad_token_id = lm.tokenizer.pad_token_id
    prompts = chat_prompts(lm, conversations)
    answers: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        enc = lm.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = lm.model.generate(**enc, generation_config=settings)
        new = out[:, enc["input_ids"].shape[1] :]
        answers += [lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
        if on_batch:
            on_batch(len(chunk))
    return answers
