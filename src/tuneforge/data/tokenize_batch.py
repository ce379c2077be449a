"""Many records tokenized at once: the same ids and labels as ``tokenize.tokenize_record`` record by record.

Validating 52,000 alpaca records spent its time in three places about equally: rendering the template
(now two renders per record, see ``tokenize._prefix_span``), tokenizing the rendered conversation with
offsets, and counting each turn's tokens. The last two now go through the fast tokenizer's batch call:
one call for a whole batch of texts, which the tokenizer's Rust side spreads over the cores and which
pays transformers' per-call overhead once. A batch call gives each text exactly the tokens a call on it
alone gives, so the labels (``tokenize.label_spans`` on the same offsets) are the same too.

What a batch call cannot give exactly goes the record-by-record way: a text long enough that only its
head is tokenized (``tokenize.fits_whole``), LLaMA-Factory's keep_answers truncation (each turn
tokenized alone and cut), and raw pretraining text.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from jinja2 import TemplateError

from .template_sandbox import TemplateBoundError
from .tokenize import (
    Tokenized,
    assistant_spans,
    chat_messages,
    fits_whole,
    label_spans,
    tokenize_chat,
    tokenize_record,
)

REFUSALS = (TemplateError, ValueError)  # what a template raises for a conversation it will not render

# Texts per batch call: enough to amortise the call, few enough that the offsets held (~100 bytes a
# token) stay small next to the records.
BATCH_TEXTS = 256


def tokenize_many(
    tokenizer,
    template: str,
    records: list[dict],
    max_len: int | None,
    mode: str = "assistant",
    truncation: str = "keep_head",
) -> list[Tokenized | Exception]:
    """``tokenize_record`` (``tokenize_chat`` with ``truncation``) of each record, in order; a record the
    template refuses (a jinja TemplateError or ValueError) gets that exception in its place, for the
    caller to locate. Anything else, a template past a bound of the sandbox included, is raised at once,
    as record by record: a hostile template stops at its first record, not at a whole batch's."""
    return _tokenize_many(tokenizer, template, records, max_len, mode, truncation, count_turns=False)[0]


def tokenize_counting_turns(
    tokenizer, template: str, records: list[dict], mode: str = "assistant"
) -> tuple[list[Tokenized | Exception], list[list[int | None] | None]]:
    """``tokenize_many`` of whole records (no max_len) and, for each record tokenized in a batch call, the
    length of each of its messages read off the conversation's tokens (``turn_lengths``); None for a
    record tokenized another way. Counting the turns from the tokens the conversation already has saves
    a second tokenizer pass over every text (it was 45% of the tokenizer's time validating alpaca data)."""
    return _tokenize_many(tokenizer, template, records, None, mode, "keep_head", count_turns=True)


def _tokenize_many(tokenizer, template, records, max_len, mode, truncation, count_turns: bool):
    out: list[Tokenized | Exception | None] = [None] * len(records)
    lengths: list[list[int | None] | None] = [None] * len(records)
    # (index, rendered text, spans, messages) waiting for the batch call
    batch: list[tuple[int, str, list, list[dict]]] = []
    for i, record in enumerate(records):
        messages = chat_messages(record)
        if messages is None or truncation == "keep_answers":
            out[i] = _one(tokenizer, template, record, messages, max_len, mode, truncation)
            continue
        try:
            text, spans = assistant_spans(tokenizer, template, messages, mode)
        except REFUSALS as exc:
            if isinstance(exc, TemplateBoundError):
                raise
            out[i] = exc
            continue
        if fits_whole(text, max_len):
            batch.append((i, text, spans, messages))
        else:
            out[i] = _one(tokenizer, template, record, messages, max_len, mode, truncation)
    for start in range(0, len(batch), BATCH_TEXTS):
        part = batch[start : start + BATCH_TEXTS]
        enc = tokenizer([t for _, t, _, _ in part], add_special_tokens=False, return_offsets_mapping=True)
        for (i, text, spans, messages), ids, offsets in zip(
            part, enc["input_ids"], enc["offset_mapping"], strict=True
        ):
            out[i] = label_spans(ids, offsets, spans, max_len)
            if count_turns:
                lengths[i] = turn_lengths(text, offsets, messages)
    return out, lengths  # type: ignore[return-value]


def turn_lengths(text: str, offsets, messages: list[dict]) -> list[int | None]:
    """How many of the rendered conversation's tokens overlap each message's content, found in order in
    ``text``; None for a message the template did not write as given (it trimmed or rewrote it).

    That is the message's length tokenized alone except where a token merges across the edge of its
    content (chatml, llama3 and alpaca put a newline or a special token there; mistral's space before an
    answer joins its first word on both counts): on the 52,000 alpaca records of bench_validate.py, and
    on every named template in tests/data/test_tokenize_batch.py, the two counts agree.
    """
    starts = [a for a, _ in offsets]
    ends = [b for _, b in offsets]
    out: list[int | None] = []
    cursor = 0
    for message in messages:
        content = message["content"]
        at = text.find(content, cursor) if content else cursor
        if at < 0:
            out.append(None)
            continue
        end = at + len(content)
        # tokens ending after the content starts, less those starting at or after its end
        out.append(bisect_left(starts, end) - bisect_right(ends, at) if content else 0)
        cursor = end
    return out


def _one(tokenizer, template, record, messages, max_len, mode, truncation) -> Tokenized | Exception:
    try:
        if messages is None:
            return tokenize_record(tokenizer, template, record, max_len, mode)
        return tokenize_chat(tokenizer, template, messages, max_len, mode, truncation)
    except REFUSALS as exc:
        if isinstance(exc, TemplateBoundError):
            raise
        return exc


def count_tokens_many(tokenizer, texts: list[str]) -> list[int]:
    """How many tokens each text has alone (no special tokens), in batch calls."""
    counts: list[int] = []
    for start in range(0, len(texts), BATCH_TEXTS):
        ids = tokenizer(texts[start : start + BATCH_TEXTS], add_special_tokens=False)["input_ids"]
        counts += [len(x) for x in ids]
    return counts
