"""Loading a stored model's tokenizer the way every part of tuneforge needs it."""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import ConfigError

from .store import resolve_model


def load_tokenizer(model_ref: str | Path, trust_remote_code: bool = False):
    """A fast tokenizer (loss masks need its offsets) with a pad token.

    ``model_ref`` is a stored model's name, a model folder, or any folder holding tokenizer files
    (a job's final/ adapter folder carries the tokenizer with the chat template it was trained with).
    """
    from transformers import AutoTokenizer

    given = Path(str(model_ref)).expanduser()
    folder = given if (given / "tokenizer_config.json").exists() else resolve_model(str(model_ref))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{model_ref}: tuneforge needs a fast tokenizer (tokenizer.json) to place loss masks."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def adapter_or_base(adapter: Path | None, base: Path, filename: str) -> Path:
    """The adapter folder when it holds ``filename`` (what training saved beside the adapter: the
    tokenizer with its chat template, the stop tokens), else the base model's folder."""
    return adapter if adapter is not None and (adapter / filename).exists() else base
