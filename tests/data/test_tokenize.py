"""Loss masks select exactly the assistant tokens, for each named chat template."""

from __future__ import annotations

import pytest

from tuneforge.data.templates import CHAT_TEMPLATES, resolve_chat_template
from tuneforge.data.tokenize import IGNORE_INDEX, Tokenized, tokenize_chat, tokenize_pretrain
from tuneforge.errors import ConfigError

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "今天天气很好"},
    {"role": "assistant", "content": "The weather is nice today."},
]


def trained_text(tok, result) -> str:
    return tok.decode(
        [t for t, lab in zip(result.input_ids, result.labels, strict=True) if lab != IGNORE_INDEX]
    )


# Where each template's assistant turn ends: at its stop token (the tiny tokenizer's eos is <|im_end|>);
# what the template writes after it (chatml's newline, alpaca's and plain's blank line) is not trained.
END = {
    "chatml": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "alpaca": "<|im_end|>",
    "chatglm3": "<|im_end|>",
    "plain": "<|im_end|>",
}


@pytest.mark.parametrize("name", list(CHAT_TEMPLATES))
def test_mask_is_exactly_the_assistant_turns(tiny_tokenizer, name):
    template = CHAT_TEMPLATES[name]
    result = tokenize_chat(tiny_tokenizer, template, CONV, max_len=None)
    # Everything trained decodes to the two answers, each with its end-of-turn marker, nothing else.
    expected = f"Paris.{END[name]}The weather is nice today.{END[name]}"
    assert trained_text(tiny_tokenizer, result) == expected
    # And the untrained tokens hold the whole prompt side.
    untrained = tiny_tokenizer.decode(
        [t for t, lab in zip(result.input_ids, result.labels, strict=True) if lab == IGNORE_INDEX]
    )
    assert "What is the capital of France?" in untrained and "Paris" not in untrained


@pytest.mark.parametrize(
    "name, between, tail",
    [
        ("chatml", "\n<|im_start|>user\n", "\n"),
        ("llama3", "<|start_header_id|>user", ""),
        ("chatglm3", "<|user|>\n", ""),
        ("alpaca", "\n\n### Instruction:\n", "\n\n"),
    ],
)
def test_assistant_turn_ends_at_its_stop_token(tiny_tokenizer, name, between, tail):
    """Each trained run is one answer through its stop token; what follows the stop token is untrained."""
    result = tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES[name], CONV, max_len=None)
    ids, trained = result.input_ids, [lab != IGNORE_INDEX for lab in result.labels]
    runs, i = [], 0
    while i < len(ids):
        if trained[i]:
            j = i
            while j < len(ids) and trained[j]:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    answers = ["Paris.", "The weather is nice today."]
    assert [tiny_tokenizer.decode(ids[a:b]) for a, b in runs] == [x + END[name] for x in answers]
    assert tiny_tokenizer.decode(ids[runs[0][1] :]).startswith(between)
    assert tiny_tokenizer.decode(ids[runs[1][1] :]) == tail


def test_last_turn_and_all_modes(tiny_tokenizer):
    template = CHAT_TEMPLATES["chatml"]
    last = tokenize_chat(tiny_tokenizer, template, CONV, None, mode="last")
    assert trained_text(tiny_tokenizer, last) == "The weather is nice today.<|im_end|>"
    everything = tokenize_chat(tiny_tokenizer, template, CONV, None, mode="all")
    assert everything.labels == everything.input_ids


def test_truncation_is_counted(tiny_tokenizer):
    result = tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES["chatml"], CONV, max_len=10)
    assert result.truncated and len(result.input_ids) == 10


def test_pretrain_trains_every_token_and_ends_with_eos(tiny_tokenizer):
    result = tokenize_pretrain(tiny_tokenizer, "The quick brown fox", None)
    assert result.labels == result.input_ids and result.input_ids[-1] == tiny_tokenizer.eos_token_id


def test_template_resolution(tiny_tokenizer):
    assert resolve_chat_template(tiny_tokenizer, "llama3") == CHAT_TEMPLATES["llama3"]
    assert resolve_chat_template(tiny_tokenizer, "auto") == tiny_tokenizer.chat_template
    assert resolve_chat_template(tiny_tokenizer, "{{ messages }}") == "{{ messages }}"
    with pytest.raises(ConfigError, match="unknown chat template"):
        resolve_chat_template(tiny_tokenizer, "vicuna-9")


def test_model_without_template_gets_plain_with_warning(tiny_tokenizer, caplog):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    assert resolve_chat_template(tok, None) == CHAT_TEMPLATES["plain"]
    assert "no chat template" in caplog.text


def test_template_that_rewrites_history_still_trains_the_stop_token(tiny_tokenizer):
    # A render of a prefix is not a prefix of the whole (the count at the end changes), so spans come
    # from finding each answer; the stop token written right after it is trained with it.
    template = (
        "{% for m in messages %}{{ '[' + m['role'] + ']' + m['content'] + '</s>' }}{% endfor %}"
        "{{ '#' ~ (messages | length) }}"
    )
    result = tokenize_chat(tiny_tokenizer, template, CONV, max_len=None)
    assert trained_text(tiny_tokenizer, result) == "Paris.</s>The weather is nice today.</s>"


@pytest.mark.parametrize("max_len", [7, 64, 300])
def test_a_huge_record_is_cut_like_the_whole_one_without_tokenizing_it_all(tiny_tokenizer, max_len):
    """Only the head of a long record is tokenized (memory stays in max_len, not in the record), and
    the ids, labels and truncation flag equal those of tokenizing the whole record and cutting it:
    chat (the answer starts inside the kept head, or beyond it) and raw text, including text whose
    characters per token are so many that the head alone would not do."""
    import tuneforge.data.tokenize as tk

    words = "The quick brown fox jumps over the lazy dog, 今天天气很好 0123456789. "
    long_user = words * 4000  # ~270k characters
    cases = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": long_user}],
        [{"role": "user", "content": long_user}, {"role": "assistant", "content": "short answer"}],
    ]
    template = CHAT_TEMPLATES["chatml"]
    texts = [long_user, " " * 200_000 + "end", "x" * 150_000]
    calls = []
    real = tk._encode_head

    def whole(tokenizer, text, limit):  # the reference: the record tokenized whole, then cut
        calls.append(len(text))
        return real(tokenizer, text, None)

    for messages in cases:
        head = tokenize_chat(tiny_tokenizer, template, messages, max_len)
        tk._encode_head = whole
        try:
            reference = tokenize_chat(tiny_tokenizer, template, messages, max_len)
        finally:
            tk._encode_head = real
        assert (head.input_ids, head.labels, head.truncated) == (
            reference.input_ids,
            reference.labels,
            reference.truncated,
        )
        assert head.truncated and len(head.input_ids) == max_len
    for text in texts:
        head = tokenize_pretrain(tiny_tokenizer, text, max_len)
        tk._encode_head = whole
        try:
            reference = tokenize_pretrain(tiny_tokenizer, text, max_len)
        finally:
            tk._encode_head = real
        assert head == reference
    assert calls, "the reference path must have run"

    seen = []
    original = tiny_tokenizer.__class__.__call__

    def spy(self, text, *a, **kw):
        seen.append(len(text))
        return original(self, text, *a, **kw)

    tiny_tokenizer.__class__.__call__ = spy
    try:
        tokenize_chat(tiny_tokenizer, template, cases[0], max_len)
    finally:
        tiny_tokenizer.__class__.__call__ = original
    assert max(seen) <= max_len * tk.CHARS_PER_TOKEN + tk.CUT_MARGIN < len(long_user)


def test_infer_seqlen_is_llamafactorys_rule():
    from tuneforge.data.tokenize import infer_seqlen

    assert infer_seqlen(76, 10, 48) == (38, 10)  # a short answer is kept whole, the prompt shortened
    assert infer_seqlen(10, 100, 48) == (10, 38)  # a short prompt is kept, the answer shortened
    assert infer_seqlen(100, 60, 48) == (30, 18)  # both long: shared in proportion (int(48 * 60 / 160))
    assert infer_seqlen(5, 7, 48) == (5, 7)


def _long_prompt_record(tok):
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 8)
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": "Paris is nice."}]
    return {"messages": messages}


@pytest.mark.parametrize(
    "truncation, trained", [("keep_head", None), ("keep_answers", "Paris is nice.<|im_end|>")]
)
def test_a_long_prompt_keeps_its_answer_under_llamafactorys_truncation(tiny_tokenizer, truncation, trained):
    """A record whose prompt alone is over max_len: the head rule drops it (no trained token left), the
    keep_answers rule (what a converted LLaMA-Factory config sets) shortens the prompt and trains the
    whole answer, within max_len."""
    from tuneforge.spec import parse_spec
    from tuneforge.train.data import tokenize_records

    spec = parse_spec(
        {"model": "m", "data": {"train": "x.json", "max_len": 48, "truncation": truncation}}, "spec"
    )
    record = _long_prompt_record(tiny_tokenizer)
    whole = tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES["chatml"], record["messages"], None)
    assert len(whole.input_ids) > 60 and whole.trained < 24
    split = tokenize_records([record], tiny_tokenizer, CHAT_TEMPLATES["chatml"], spec)
    if trained is None:
        assert (split.dropped, split.examples) == (1, [])
        return
    (example,) = split.examples
    assert split.dropped == 0 and len(example["input_ids"]) <= 48
    assert trained_text(tiny_tokenizer, Tokenized(example["input_ids"], example["labels"])) == trained
    assert tiny_tokenizer.decode(example["input_ids"]).startswith("<|im_start|>user\nThe quick brown fox")


def test_keep_answers_with_last_turn_masking_fills_from_the_last_turn(tiny_tokenizer):
    """LLaMA-Factory's mask_history: the last turn gets the room first, earlier turns what is left."""
    result = tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES["chatml"], CONV, 40, "last", "keep_answers")
    assert len(result.input_ids) == 40 and result.truncated
    assert trained_text(tiny_tokenizer, result) == "The weather is nice today.<|im_end|>"
    kept = tiny_tokenizer.decode(result.input_ids)
    assert "user\n今天天气很好" in kept and "Paris" not in kept  # the first turn got no room
    whole = tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES["chatml"], CONV, None, "assistant", "keep_answers")
    assert not whole.truncated and tiny_tokenizer.decode(whole.input_ids) == tiny_tokenizer.decode(
        tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES["chatml"], CONV, None).input_ids
    )


def _turns(n: int) -> list[dict]:
    out = [{"role": "system", "content": "Be brief."}]
    for i in range(n):
        out += [
            {"role": "user", "content": f"Question {i}: what is {i} plus {i}?"},
            {"role": "assistant", "content": f"It is {2 * i}."},
        ]
    return out


def _old_path(monkeypatch):
    import tuneforge.data.tokenize as tk

    monkeypatch.setattr(tk, "_spans_by_layout", lambda *a: None)  # render prefix by prefix, as before


@pytest.mark.parametrize("mode", ["assistant", "last"])
def test_spans_from_one_render_equal_the_prefix_renders(tiny_tokenizer, monkeypatch, mode):
    """The spans read off the whole conversation give the ids and labels rendering each prefix gave, for
    every named template, LLaMA-Factory's, a model's own, and one that rewrites history."""
    from tuneforge.data.templates import LLAMAFACTORY_TEMPLATES

    rewriting = (
        "{% for m in messages %}{{ '[' + m['role'] + ']' + m['content'] + '</s>' }}{% endfor %}"
        "{{ '#' ~ (messages | length) }}"
    )
    templates = [*CHAT_TEMPLATES.values(), *LLAMAFACTORY_TEMPLATES.values(), tiny_tokenizer.chat_template]
    conversations = [CONV, _turns(3), CONV[1:3], [*CONV[1:3], {"role": "user", "content": "More?"}]]
    conversations.append([{"role": "user", "content": "Paris."}, {"role": "assistant", "content": "Paris."}])
    cases = [(t, c) for t in [*templates, rewriting] for c in conversations]
    new = [tokenize_chat(tiny_tokenizer, t, c, None, mode) for t, c in cases]
    _old_path(monkeypatch)
    old = [tokenize_chat(tiny_tokenizer, t, c, None, mode) for t, c in cases]
    assert new == old
    assert sum(r.trained for r in new) > 100


def test_ten_thousand_turns_take_linear_time(tiny_tokenizer):
    """One conversation of 10,000 turns: rendering each prefix took over a minute (3,000 turns: 34 s);
    two renders of the whole and two prefixes now. The bound leaves room for a loaded machine."""
    import time

    messages = _turns(10_000)
    started = time.monotonic()
    result = tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES["chatml"], messages, None)
    assert time.monotonic() - started < 30
    assert trained_text(tiny_tokenizer, result).count("<|im_end|>") == 10_000
