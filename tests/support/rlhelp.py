"""A tiny model that writes digits, and the arithmetic prompts its GRPO tests train on.

The shared test tokenizer has about 400 byte-level tokens, so a random model almost never writes the
right digit and an exact-match reward stays at 0: nothing to learn from. This one knows 16 tokens (digits,
+, =, specials); a completion of one token is right by chance often enough for GRPO's groups to differ.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_tiny_model

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # the prompt's text alone


def digits_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *"0123456789", "+", "="]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d|[+=]"), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = TEMPLATE
    return fast


def digits_model(folder: Path) -> Path:
    return make_tiny_model(folder, tokenizer=digits_tokenizer())


def sums(limit: int = 3) -> list[dict]:
    """``a+b=`` prompts with their answers, a and b below ``limit``."""
    return [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(limit) for b in range(limit)]
