"""Records tokenized in batches give exactly the ids and labels of tokenizing them one by one."""

from __future__ import annotations

from collections import Counter

import pytest

from tuneforge.data.templates import CHAT_TEMPLATES, LLAMAFACTORY_TEMPLATES
from tuneforge.data.tokenize import tokenize_chat, tokenize_record
from tuneforge.data.tokenize_batch import tokenize_many
from tuneforge.data.validate import StatsBuilder

SYSTEM = {"role": "system", "content": "Be brief."}
# A template whose render of a prefix is not a prefix of the whole (the count at the end changes).
REWRITING = (
    "{% for m in messages %}{{ '[' + m['role'] + ']' + m['content'] + '</s>' }}{% endfor %}"
    "{{ '#' ~ (messages | length) }}"
)
REFUSING = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('system messages are not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
)


def _chat(*turns: str, system: bool = False) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {
        "messages": [SYSTEM] * system
        + [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]
    }


RECORDS = [
    _chat("What is the capital of France?", "Paris."),
    _chat("今天天气很好", "The weather is nice today.", system=True),
    _chat("Question 1", "One.", "Question 2", "Two.", "Question 3", "Three.", system=True),  # layout path
    _chat("Long one: " + "the quick brown fox " * 120, "And a long answer " * 90),  # past fits_whole at 7
    _chat("An answer after the cut", "x " * 400),
    {"messages": [{"role": "user", "content": "No answer here"}]},
    {  # a preference pair: its chosen conversation
        "prompt": [{"role": "user", "content": "Pick one"}],
        "chosen": [{"role": "assistant", "content": "This one."}],
        "rejected": [{"role": "assistant", "content": "That one."}],
    },
    {  # KTO: prompt + completion
        "prompt": [{"role": "user", "content": "Rate it"}],
        "completion": [{"role": "assistant", "content": "Good."}],
        "label": True,
    },
    {"text": "Raw pretraining text, tokenized the one-by-one way. " * 3},
]
TEMPLATES = [
    *CHAT_TEMPLATES.values(),
    LLAMAFACTORY_TEMPLATES["llama3"],
    LLAMAFACTORY_TEMPLATES["mistral"],
    REWRITING,
]


@pytest.mark.parametrize("max_len", [None, 7, 64])
@pytest.mark.parametrize("mode", ["assistant", "last", "all"])
def test_batches_equal_one_by_one(tiny_tokenizer, max_len, mode, monkeypatch):
    import tuneforge.data.tokenize_batch as tb

    monkeypatch.setattr(tb, "BATCH_TEXTS", 4)  # several batch calls, and a last one part full
    for template in TEMPLATES:
        batched = tokenize_many(tiny_tokenizer, template, RECORDS, max_len, mode)
        one_by_one = [tokenize_record(tiny_tokenizer, template, r, max_len, mode) for r in RECORDS]
        assert batched == one_by_one, template
    assert any(t.truncated for t in batched) == (max_len is not None)


def test_keep_answers_truncation_equals_one_by_one(tiny_tokenizer):
    chats = [r for r in RECORDS if "messages" in r]
    template = LLAMAFACTORY_TEMPLATES["llama3"]
    batched = tokenize_many(tiny_tokenizer, template, chats, 16, "assistant", "keep_answers")
    expected = [
        tokenize_chat(tiny_tokenizer, template, r["messages"], 16, "assistant", "keep_answers") for r in chats
    ]
    assert batched == expected


def test_a_refused_record_gets_its_exception_in_place(tiny_tokenizer):
    records = [RECORDS[0], RECORDS[1], RECORDS[0]]  # the second has a system message
    out = tokenize_many(tiny_tokenizer, REFUSING, records, None)
    assert "system messages are not supported" in str(out[1])
    assert out[0] == out[2] == tokenize_record(tiny_tokenizer, REFUSING, RECORDS[0], None)


def test_statistics_in_batches_equal_record_by_record(tiny_tokenizer):
    from tuneforge.data.load import RecordError

    def build():
        return StatsBuilder(tiny_tokenizer, REFUSING, max_len=32, preview=2)

    one = build()
    for r in RECORDS:
        try:
            one.add(r)
        except RecordError:
            pass
    many = build()
    refused = many.add_many(RECORDS)
    assert [i for i, _ in refused] == [1, 2]  # the two with a system message
    assert many.stats() == one.stats() and many.previews == one.previews
    assert many.stats()["sequence"]["count"] == len(RECORDS) - 2


def test_worker_processes_give_the_statistics_and_locations_of_one_process(
    tiny_tokenizer, tmp_path, monkeypatch
):
    """Chunks counted in forked workers merge into the statistics, previews and located refusals that
    counting in the reading process gives."""
    import json

    import tuneforge.data.stats_pool as sp
    import tuneforge.data.validate as v
    from tuneforge.settings import get_settings

    rows = [
        {"instruction": f"Question {i}: " + "why " * (i % 7), "output": f"Answer {i}."} for i in range(60)
    ]
    rows[5]["system"] = rows[41]["system"] = "be brief"  # refused by the template, in two chunks
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(sp, "TOKENIZE_BATCH", 4)  # 15 chunks: the pool is used
    forked = []
    real_init = sp.StatsPool.__init__

    def init(self, *args):
        real_init(self, *args)
        forked.append(self.pool is not None)

    monkeypatch.setattr(sp.StatsPool, "__init__", init)
    reports = []
    for workers in ("2", "1"):
        monkeypatch.setenv("TUNEFORGE_VALIDATE_WORKERS", workers)
        get_settings.cache_clear()
        reports.append(v.validate_path(path, tokenizer_loader=lambda: (tiny_tokenizer, REFUSING)))
    pooled, alone = reports
    assert forked == [True, False]
    assert pooled.stats == alone.stats and pooled.previews == alone.previews and pooled.previews
    assert pooled.stats["sequence"]["count"] == 58
    assert [(e.line, e.record) for e in pooled.loaded.errors] == [(6, 6), (42, 42)]  # records from 1
    assert [e.to_dict() for e in pooled.loaded.errors] == [e.to_dict() for e in alone.loaded.errors]


def test_a_worker_that_dies_is_a_clear_error(tiny_tokenizer):
    import os
    import signal

    import tuneforge.data.stats_pool as sp
    from tuneforge.errors import ResourceError

    pool = sp.StatsPool(StatsBuilder(tiny_tokenizer, REFUSING), workers=2)
    try:
        pool.submit([RECORDS[0]])
        for pid in list(pool.pool._processes):  # an OOM kill, as the kernel does it
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(ResourceError, match="TUNEFORGE_VALIDATE_WORKERS=1"):
            pool.submit([RECORDS[0]])
            pool.finish()
    finally:
        pool.close()


def test_a_template_past_a_bound_stops_at_the_first_record(tiny_tokenizer, monkeypatch):
    """Not after rendering the whole batch: a template that takes seconds to hit its bound once would take
    a batch's worth of those."""
    import tuneforge.data.tokenize_batch as tb
    from tuneforge.data.template_sandbox import TemplateBoundError, install

    install()
    rendered = []
    real = tb.render_conversation
    monkeypatch.setattr(tb, "render_conversation", lambda *a: rendered.append(1) or real(*a))
    hostile = "{% for i in range(10 ** 9) %}x{% endfor %}"
    with pytest.raises(TemplateBoundError):
        tokenize_many(tiny_tokenizer, hostile, RECORDS[:3], None)
    assert len(rendered) == 1


@pytest.mark.parametrize(
    "template",
    [*CHAT_TEMPLATES.values(), *LLAMAFACTORY_TEMPLATES.values()],
    ids=[*CHAT_TEMPLATES, *(f"lf-{k}" for k in LLAMAFACTORY_TEMPLATES)],
)
def test_turn_lengths_from_the_conversation_equal_each_turn_alone(tiny_tokenizer, template, monkeypatch):
    """The per-role lengths are each turn's own token count, as before, though only the turns a template
    did not write as given (llama3 trims them) and a pair's rejected answer are tokenized alone."""
    import tuneforge.data.validate as v
    from tuneforge.data.records import record_texts, record_turns

    alone_texts: list[str] = []
    real = v.count_tokens_many
    monkeypatch.setattr(v, "count_tokens_many", lambda tok, xs: alone_texts.extend(xs) or real(tok, xs))
    records = [r for r in RECORDS if "text" not in r]
    builder = StatsBuilder(tiny_tokenizer, template)
    builder.add_many(records)
    expected: dict = {}
    for r in records:
        roles = [m["role"] for m in record_turns(r)]
        for role, text in zip([*roles, "rejected"], record_texts(r), strict=False):
            n = len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
            expected.setdefault(role, []).append(n)
    assert builder.per_role == {role: Counter(ns) for role, ns in expected.items()}
    trims = "| trim" in template
    assert (len(alone_texts) > 1) == trims, alone_texts  # the rejected answer only, unless trimmed
    assert "That one." in alone_texts


def test_counting_by_characters_equals_counting_from_offsets(tiny_tokenizer):
    """A FileTokenizer's counts (``count_by_chars``: a few character lookups per record) are those of the
    same tokenizer's offsets, on every template and mask mode, chinese text (counted from its offsets)
    included."""
    from tests.data.test_turn_lengths_hostile import file_tokenizer

    by_chars = file_tokenizer(tiny_tokenizer)
    assert by_chars.counts_by_chars
    records = [*RECORDS, _chat("  spaces around  ", " and an answer\n"), _chat("", "Empty question.")]
    runs = [(t, "assistant") for t in [*TEMPLATES, *LLAMAFACTORY_TEMPLATES.values()]]
    runs += [(CHAT_TEMPLATES["chatml"], "last"), (CHAT_TEMPLATES["chatml"], "all")]
    for template, mode in runs:
        built = []
        for tokenizer in (tiny_tokenizer, by_chars):
            builder = StatsBuilder(tokenizer, template, max_len=32, preview=2, mask_mode=mode)
            builder.add_many(records)
            built.append((builder.stats(), builder.per_role, builder.previews))
        assert built[0] == built[1], (template, mode)


def test_a_conversation_is_rendered_once_where_its_layout_holds(tiny_tokenizer):
    """Ten conversations of the same roles: ten renders and the two that learn the layout (placeholders,
    the prefix before the answer), not two a conversation; the spans are the prefix renders' own. A
    template that trims a content (llama3) is not its layout filled in: the slow way, the same spans."""
    from tests.data.test_turn_lengths_hostile import file_tokenizer
    from tuneforge.data.render_layout import render_conversation
    from tuneforge.data.tokenize import assistant_spans

    tokenizer = file_tokenizer(tiny_tokenizer)
    renders = []
    real = tokenizer.apply_chat_template
    tokenizer.apply_chat_template = lambda *a, **k: renders.append(1) or real(*a, **k)
    chats = [_chat(f"Question {i}?", f"Answer {i}.")["messages"] for i in range(10)]
    template = CHAT_TEMPLATES["chatml"] + "{# a template no other test has laid out #}"
    rendered = [render_conversation(tokenizer, template, m) for m in chats]
    assert len(renders) == len(chats) + 2
    assert all(r.positions is not None for r in rendered)
    assert [(r.text, r.spans) for r in rendered] == [assistant_spans(tokenizer, template, m) for m in chats]
    padded = [{**m, "content": f" {m['content']} "} for m in chats[0]]
    trimmed = render_conversation(tokenizer, CHAT_TEMPLATES["llama3"], padded)
    assert trimmed.positions is None
    assert (trimmed.text, trimmed.spans) == assistant_spans(tokenizer, CHAT_TEMPLATES["llama3"], padded)
