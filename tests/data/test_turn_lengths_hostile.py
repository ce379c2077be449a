"""Turn lengths read off the conversation's tokens (data/tokenize_batch.py ``turn_lengths`` and
``count_by_chars``) against the definition they stand for: each turn's content tokenized alone.
Reproducers of what a hostile or unlucky record breaks."""

from __future__ import annotations

from collections import Counter

import pytest

from tuneforge.data.templates import CHAT_TEMPLATES
from tuneforge.data.validate import StatsBuilder


def file_tokenizer(tiny_tokenizer):
    """The tiny tokenizer as ``tuneforge datasets validate`` reads a model's: a FileTokenizer, which counts
    by character lookups (``count_by_chars``) where the HF one counts from all offsets."""
    from tokenizers import Tokenizer

    from tuneforge.models.file_tokenizer import FileTokenizer

    special = {"eos_token": tiny_tokenizer.eos_token, "bos_token": tiny_tokenizer.bos_token}
    backend = Tokenizer.from_str(tiny_tokenizer.backend_tokenizer.to_str())
    return FileTokenizer(backend, special, tiny_tokenizer.chat_template)


@pytest.mark.parametrize("reader", ["transformers", "file"])
@pytest.mark.parametrize("extra", [False, True], ids=["layout", "searched"])  # a key the layout does not know
def test_a_turn_spelling_part_of_a_special_token_counts_its_own_tokens(tiny_tokenizer, reader, extra):
    tokenizer = file_tokenizer(tiny_tokenizer) if reader == "file" else tiny_tokenizer
    assert reader == "transformers" or tokenizer.counts_by_chars
    turns = [{"role": "user", "content": "im_start"}, {"role": "assistant", "content": "ok"}]
    if extra:
        turns[0]["name"] = "x"
    records = [{"messages": turns}]
    builder = StatsBuilder(tokenizer, CHAT_TEMPLATES["chatml"])
    builder.add_many(records)
    alone = {
        m["role"]: Counter([len(tiny_tokenizer(m["content"], add_special_tokens=False)["input_ids"])])
        for m in records[0]["messages"]
    }
    assert builder.per_role == alone
