"""Answer chat prompts in batches with a model loaded by ``tuneforge.models.inference``."""

from __future__ import annotations

from tuneforge.models.inference import (  # noqa: F401  (loaders re-exported for older imports)
    LoadedModel,
    adapter_base,
    ensure_chat_template,
    load_for_inference,
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
) -> list[str]:
    """Greedy answers to each conversation (ending with a user turn), batched with left padding."""
    import torch

    prompts = chat_prompts(lm, conversations)
    answers: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        enc = lm.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = lm.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=lm.stop_ids or None,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        answers += [lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
        if on_batch:
            on_batch(len(chunk))
    return answers
