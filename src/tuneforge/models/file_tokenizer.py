"""A model's tokenizer read from its files with the ``tokenizers`` library alone: no torch, no model code.

Counting tokens (``tuneforge datasets validate``, the platform's token report) needs only what a fast
tokenizer's files hold: ``tokenizer.json`` (the tokenizer itself), ``tokenizer_config.json`` (the special
tokens) and the chat template (``chat_template.jinja`` or the config's ``chat_template``). Loading them
through ``AutoTokenizer`` imported torch and transformers first: 8.7 CPU-s and ~380 MB of 52,000 records'
validation. ``FileTokenizer`` answers the calls the data path makes (a call with or without offsets,
``decode``, ``apply_chat_template``, the special tokens) with the ids and text ``AutoTokenizer``'s tokenizer
gives (tests/models/test_file_tokenizer.py compares them). Templates are rendered by transformers' own
``render_jinja_template`` (its module imports neither torch nor the model code) in tuneforge's bounded
sandbox, so the text is the text ``apply_chat_template`` renders.

Files this reader does not fully understand (a slow-only tokenizer, a tokenizer class that rebuilds its
pipeline, a config key that changes encoding, extra special tokens) go to ``models.load.load_tokenizer``:
the transformers path, as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .store import resolve_model

log = logging.getLogger(__name__)

SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer classes that take tokenizer.json as it is (transformers v5's generic one is TokenizersBackend)
PLAIN_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
# config keys that change nothing the data path asks for (encoding without special tokens, decoding)
HARMLESS_KEYS = frozenset(
    {
        "backend", "tokenizer_class", "model_max_length", "added_tokens_decoder", "chat_template", "is_local",
        "local_files_only", "clean_up_tokenization_spaces", "model_input_names", "padding_side",
        "truncation_side", "name_or_path", "auto_map", "processor_class", "errors", *SPECIAL_NAMES,
    }
)  # fmt: skip


class FileTokenizer:
    """What the data path calls on a tokenizer, over a ``tokenizers.Tokenizer``."""

    is_fast = True

    def __init__(self, backend, special: dict[str, str | None], chat_template: str | None):
        backend.no_truncation()  # transformers' call turns off what tokenizer.json may set
        backend.no_padding()
        self._tokenizer = backend
        for name in SPECIAL_NAMES:
            setattr(self, name, special.get(name))
        if self.pad_token is None:  # as load_tokenizer
            self.pad_token = self.eos_token
        self.chat_template = chat_template
        self.add_bos_token = False
        self._sandboxed = False
        self.counts_by_chars = _tokens_cover_ascii(backend)

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self._tokenizer.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self._tokenizer.token_to_id(self.eos_token)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SPECIAL_NAMES if getattr(self, name) is not None}

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, text, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        if isinstance(text, str):
            encodings = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
            out = {"input_ids": encodings.ids}
            if return_offsets_mapping:
                out["offset_mapping"] = encodings.offsets
            return out
        encodings = self._tokenizer.encode_batch(list(text), add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encodings]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return out

    def encodings(self, texts: list[str]):
        """The ``tokenizers.Encoding`` of each text (no special tokens added): what ``__call__`` reads its
        ids and offsets from, for a caller that needs only a few of them (``data.tokenize_batch``)."""
        return self._tokenizer.encode_batch(texts, add_special_tokens=False)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages, chat_template: str | None = None, tokenize: bool = False, add_generation_prompt=False
    ) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        from tuneforge.data import template_sandbox

        if tokenize:
            raise ValueError("FileTokenizer renders templates as text only (tokenize=False)")
        template = chat_template or self.chat_template
        if not template:
            raise ValueError("the tokenizer has no chat template and none was given")
        if not self._sandboxed:  # resolve_chat_template has done it already; once is enough
            template_sandbox.install()
            self._sandboxed = True
        rendered, _ = render_jinja_template(
            [messages], chat_template=template, add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )  # fmt: skip
        return rendered[0]


def _tokens_cover_ascii(backend) -> bool:
    """Whether every token of an ASCII text covers at least one character and the tokens follow one another
    (``data.tokenize_batch.count_by_chars`` relies on it): a byte-level BPE (one character, one byte) with
    no normalizer to move characters and no offsets trimmed after it."""
    from tokenizers import models, pre_tokenizers, processors

    model, post = backend.model, backend.post_processor
    return (
        backend.normalizer is None
        and type(backend.pre_tokenizer) is pre_tokenizers.ByteLevel
        and type(model) is models.BPE
        and not model.byte_fallback
        and not model.dropout
        and (
            post is None
            or type(post) is processors.TemplateProcessing
            or (type(post) is processors.ByteLevel and not post.trim_offsets)
        )
    )


def _token_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"a special token written as {type(value).__name__}")


def read_file_tokenizer(folder: Path) -> FileTokenizer | None:
    """The tokenizer of ``folder`` read without transformers, or None where its files need transformers."""
    from tokenizers import Tokenizer

    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (folder / "tokenizer.json").is_file():
        return None
    if (folder / "chat_template.json").exists() or (folder / "special_tokens_map.json").exists():
        return None  # named templates, special tokens from a second file: transformers' precedence rules
    if not isinstance(config, dict) or set(config) - HARMLESS_KEYS:
        return None
    if config.get("tokenizer_class", "PreTrainedTokenizerFast") not in PLAIN_CLASSES:
        return None
    if config.get("clean_up_tokenization_spaces"):
        return None  # transformers rewrites the decoded text; leave that to it
    try:
        special = {name: _token_text(config.get(name)) for name in SPECIAL_NAMES}
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # noqa: BLE001 (a file transformers may still read: let it say what is wrong)
        log.debug("%s: reading the tokenizer without transformers failed (%s)", folder, exc)
        return None
    # Every special and added token the config names must be the one tokenizer.json holds (transformers
    # would add the missing ones, shifting nothing the tokenizer encodes today but the ids of those tokens).
    added = config.get("added_tokens_decoder") or {}
    if any(backend.token_to_id(token) is None for token in special.values() if token is not None):
        return None
    for token_id, token in added.items():
        if not isinstance(token, dict) or backend.token_to_id(str(token.get("content"))) != int(token_id):
            return None
    template_file = folder / "chat_template.jinja"
    template = config.get("chat_template")
    if template_file.is_file():
        template = template_file.read_text(encoding="utf-8")
    if template is not None and not isinstance(template, str):
        return None  # named templates: transformers chooses among them
    return FileTokenizer(backend, special, template or None)


def load_counting_tokenizer(model_ref: str | Path):
    """A tokenizer to count tokens and render templates with: ``FileTokenizer`` where the files allow,
    else ``load_tokenizer``'s (transformers). ``model_ref`` as ``load_tokenizer`` takes it."""
    from .load import load_tokenizer

    given = Path(str(model_ref)).expanduser()
    folder = given if (given / "tokenizer_config.json").exists() else resolve_model(str(model_ref))
    return read_file_tokenizer(folder) or load_tokenizer(model_ref)
