"""Many records tokenized at once: the same ids and labels as ``tokenize.tokenize_record`` record by record.

Validating 52,000 alpaca records spent its time in three places about equally: rendering the template
(now one render per record where its layout holds, see ``render_layout``), tokenizing the rendered
conversation with offsets, and counting each turn's tokens. The last two now go through the fast
tokenizer's batch call: one call for a whole batch of texts, which the tokenizer's Rust side spreads over
the cores and which pays transformers' per-call overhead once. A batch call gives each text exactly the
tokens a call on it alone gives, so the labels (``tokenize.label_spans`` on the same offsets) are the same
too.

What a batch call cannot give exactly goes the record-by-record way: a text long enough that only its
head is tokenized (``tokenize.fits_whole``), LLaMA-Factory's keep_answers truncation (each turn
tokenized alone and cut), and raw pretraining text.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from jinja2 import TemplateError

from .render_layout import Rendered, render_conversation
from .template_sandbox import TemplateBoundError
from .tokenize import (
    TokenCount,
    Tokenized,
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
) -> tuple[list[TokenCount | Exception], list[list[int | None] | None]]:
    """Each record's length and trained tokens (``tokenize_many`` of whole records, no max_len) and, for
    each record tokenized in a batch call, the length of each of its messages read off the conversation's
    tokens (``turn_lengths``); None for a record tokenized another way. Counting the turns from the tokens
    the conversation already has saves a second tokenizer pass over every text (it was 45% of the
    tokenizer's time validating alpaca data)."""
    return _tokenize_many(tokenizer, template, records, None, mode, "keep_head", count_turns=True)


def _tokenize_many(tokenizer, template, records, max_len, mode, truncation, count_turns: bool):
    out: list = [None] * len(records)
    lengths: list[list[int | None] | None] = [None] * len(records)
    batch: list[tuple[int, Rendered, list[dict]]] = []  # waiting for the batch call
    for i, record in enumerate(records):
        messages = chat_messages(record)
        if messages is None or truncation == "keep_answers":
            out[i] = _one(tokenizer, template, record, messages, max_len, mode, truncation)
            continue
        try:
            rendered = render_conversation(tokenizer, template, messages, mode)
        except REFUSALS as exc:
            if isinstance(exc, TemplateBoundError):
                raise
            out[i] = exc
            continue
        if fits_whole(rendered.text, max_len):
            batch.append((i, rendered, messages))
        else:
            out[i] = _one(tokenizer, template, record, messages, max_len, mode, truncation)
    by_chars = count_turns and getattr(tokenizer, "counts_by_chars", False)
    for start in range(0, len(batch), BATCH_TEXTS):
        part = batch[start : start + BATCH_TEXTS]
        texts = [rendered.text for _, rendered, _ in part]
        if by_chars:
            encodings = tokenizer.encodings(texts)
        else:
            enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for n, (i, rendered, messages) in enumerate(part):
            if by_chars:
                counted = count_by_chars(encodings[n], rendered)
                if counted is not None:
                    out[i], lengths[i] = counted
                    continue
                ids, offsets = encodings[n].ids, encodings[n].offsets
            else:
                ids, offsets = enc["input_ids"][n], enc["offset_mapping"][n]
            tokenized = label_spans(ids, offsets, rendered.spans, max_len)
            out[i] = TokenCount(tokenized.length, tokenized.trained) if count_turns else tokenized
            if count_turns:
                lengths[i] = turn_lengths(rendered.text, offsets, messages, rendered.positions)
    return out, lengths


def count_by_chars(encoding, rendered: Rendered) -> tuple[TokenCount, list[int]] | None:
    """``label_spans``' length and trained tokens and ``turn_lengths`` of a conversation, from a few
    character lookups in its ``tokenizers.Encoding`` instead of all its offsets as Python tuples (those
    and the per-token loops were a quarter of counting). Exact where the tokens cover the text one after
    another, each at least one character (a ``counts_by_chars`` tokenizer on ASCII text) and every
    content's place is known; None otherwise (count from the offsets)."""
    if rendered.positions is None or not rendered.text.isascii():
        return None

    def tokens(a: int, b: int) -> tuple[int, int] | None:  # first and last token overlapping [a, b)
        if a >= b:
            return None
        first, last = encoding.char_to_token(a), encoding.char_to_token(b - 1)
        return None if first is None or last is None else (first, last)

    trained, previous = 0, -1
    for a, b in rendered.spans:
        found = tokens(a, b)
        if found is None or found[0] <= previous:  # a token in two spans counts once: count it slowly
            return None
        trained += found[1] - found[0] + 1
        previous = found[1]
    turns = []
    for a, b in rendered.positions:
        found = tokens(a, b) if b > a else (0, -1)
        if found is None:
            return None
        turns.append(found[1] - found[0] + 1)
    return TokenCount(len(encoding), trained), turns


def turn_lengths(text: str, offsets, messages: list[dict], positions=None) -> list[int | None]:
    """How many of the rendered conversation's tokens overlap each message's content: at ``positions``
    (each content's (start, end) in ``text``, ``render_layout``'s) where known, else found in order in
    ``text``; None for a message the template did not write as given (it trimmed or rewrote it).

    That is the message's length tokenized alone except where a token merges across the edge of its
    content (chatml, llama3 and alpaca put a newline or a special token there; mistral's space before an
    answer joins its first word on both counts): on the 52,000 alpaca records of bench_validate.py, and
    on every named template in tests/data/test_tokenize_batch.py, the two counts agree. A content found
    inside one token of the template's own text (``"im_start"`` inside ``<|im_start|>``) is not its place.
    """
    starts = [a for a, _ in offsets]
    ends = [b for _, b in offsets]
    out: list[int | None] = []
    cursor = 0
    for k, message in enumerate(messages):
        content = message["content"]
        at = positions[k][0] if positions is not None else _find(text, content, cursor, starts, ends)
        if at < 0:
            out.append(None)
            continue
        end = at + len(content)
        # tokens ending after the content starts, less those starting at or after its end
        out.append(bisect_left(starts, end) - bisect_right(ends, at) if content else 0)
        cursor = end
    return out


def _find(text: str, content: str, cursor: int, starts: list[int], ends: list[int]) -> int:
    """Where ``content`` is in ``text`` from ``cursor`` on, not inside a single token; -1 where nowhere."""
    if not content:
        return cursor
    at = text.find(content, cursor)
    while at >= 0:
        first = bisect_right(ends, at)  # the first token ending after the content starts
        if not (first < len(starts) and starts[first] < at and ends[first] > at + len(content)):
            return at
        at = text.find(content, at + 1)
    return -1


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
