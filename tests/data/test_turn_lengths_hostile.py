"""Turn lengths read off the conversation's tokens (data/tokenize_batch.py ``turn_lengths``) against the
definition they stand for: each turn's content tokenized alone. Reproducers of what a hostile or unlucky
record breaks; fixes belong to tokenize_batch.py (another slice this session)."""

from __future__ import annotations

from collections import Counter

from tuneforge.data.templates import CHAT_TEMPLATES
from tuneforge.data.validate import StatsBuilder


def test_a_turn_spelling_part_of_a_special_token_counts_its_own_tokens(tiny_tokenizer):
    turns = [{"role": "user", "content": "im_start"}, {"role": "assistant", "content": "ok"}]
    records = [{"messages": turns}]
    builder = StatsBuilder(tiny_tokenizer, CHAT_TEMPLATES["chatml"])
    builder.add_many(records)
    alone = {
        m["role"]: Counter([len(tiny_tokenizer(m["content"], add_special_tokens=False)["input_ids"])])
        for m in records[0]["messages"]
    }
    assert builder.per_role == alone
