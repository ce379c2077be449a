"""Turn canonical records into token ids and labels, with the loss on exactly the tokens to learn.

Chat records are rendered with the chat template once; the character spans of assistant turns come
from rendering each prefix of the conversation, and tokens are matched to spans through the fast
tokenizer's offsets. That works for any template that renders prefixes as prefixes (all common ones).
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def end_of_turn(text: str, start: int, end: int, stops: tuple[str, ...]) -> int:
    """Where an assistant turn ends: just after its stop token, which the model must learn to emit.

    What a template writes after the stop token is layout between turns, never trained: chatml's
    newline after ``<|im_end|>``, the blank line alpaca and plain put after ``eos_token``. llama3's turn
    ends at ``<|eot_id|>`` and chatglm3's at ``eos_token`` with nothing after. A turn rendered without
    a stop token (a template that rewrites history; see ``assistant_spans``) takes the stop token
    written right after its content.
    """
    while end > start and text[end - 1].isspace():
        end -= 1
    if not text[start:end].endswith(stops):
        for stop in stops:
            if text.startswith(stop, end):
                return end + len(stop)
    return end


def assistant_spans(tokenizer, template: str, messages: list[dict], mode: str = "assistant"):
    """The rendered text and the (start, end) character spans the loss is computed on."""
    from .templates import END_OF_TURN_MARKERS

    text = _render(tokenizer, template, messages)
    if mode == "all":
        return text, [(0, len(text))]
    stops = tuple(m for m in (tokenizer.eos_token, *END_OF_TURN_MARKERS) if m)
    spans = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, template, messages[:i], add_generation_prompt=True) if i else ""
        through = _render(tokenizer, template, messages[: i + 1])
        if text.startswith(before) and text.startswith(through) and len(through) > len(before):
            start, end = len(before), len(through)
        else:  # a template that rewrites earlier turns: fall back to finding the content itself
            start = text.find(m["content"], cursor)
            if start < 0:
                continue
            end = start + len(m["content"])
        end = end_of_turn(text, start, end, stops)
        spans.append((start, end))
        cursor = end
    if mode == "last":
        spans = spans[-1:]
    return text, spans


# Tokenizing a whole record to keep its first max_len tokens costs memory in the record's length (an
# 8 MiB record: ~2 M tokens with offsets, ~1.8 GB). Tokenizers split text into words first and merge
# within words, so the tokens of a prefix of the text are the text's own tokens up to the last word
# before the cut. The head of the text is therefore tokenized alone when it holds more than max_len
# tokens ending well before the cut; text averaging more than CHARS_PER_TOKEN characters per token
# (never seen in real text) is tokenized whole, as before.
CHARS_PER_TOKEN = 32
CUT_MARGIN = 1024  # characters between the last kept token and the cut: longer than any word


def _encode_head(tokenizer, text: str, max_len: int | None) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, character offsets) of ``text``, or of enough of its head to hold ``max_len + 1`` tokens."""

    def encode(t):
        enc = tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]

    if max_len is not None and len(text) > max_len * CHARS_PER_TOKEN + CUT_MARGIN:
        cut = max_len * CHARS_PER_TOKEN + CUT_MARGIN
        ids, offsets = encode(text[:cut])
        if len(ids) > max_len + 1 and offsets[max_len][1] <= cut - CUT_MARGIN:
            return ids[: max_len + 1], offsets[: max_len + 1]
    return encode(text)


def tokenize_text_with_spans(tokenizer, text: str, spans, max_len: int | None) -> Tokenized:
    ids, offsets = _encode_head(tokenizer, text, max_len)
    labels = []
    s = 0
    for tok, (a, b) in zip(ids, offsets, strict=True):
        while s < len(spans) and spans[s][1] <= a:
            s += 1
        # a token counts when it overlaps a span; zero-width special tokens at a span's start included
        inside = s < len(spans) and a < spans[s][1] and (b > spans[s][0] or (a == b == spans[s][0]))
        labels.append(tok if inside else IGNORE_INDEX)
    truncated = max_len is not None and len(ids) > max_len
    if truncated:
        ids, labels = ids[:max_len], labels[:max_len]
    return Tokenized(list(ids), labels, truncated)


def tokenize_chat(
    tokenizer, template: str, messages: list[dict], max_len: int | None, mode: str = "assistant"
) -> Tokenized:
    text, spans = assistant_spans(tokenizer, template, messages, mode)
    return tokenize_text_with_spans(tokenizer, text, spans, max_len)


def tokenize_pretrain(tokenizer, text: str, max_len: int | None) -> Tokenized:
    """Raw text: loss on every token; an EOS closes each document so documents stay apart."""
    ids = list(_encode_head(tokenizer, text, max_len)[0])
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        ids = [tokenizer.bos_token_id] + ids
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    truncated = max_len is not None and len(ids) > max_len
    ids = ids[:max_len] if truncated else ids
    return Tokenized(ids, list(ids), truncated)


def tokenize_record(
    tokenizer, template: str, record: dict, max_len: int | None, mode: str = "assistant"
) -> Tokenized:
    if "text" in record:
        return tokenize_pretrain(tokenizer, record["text"], max_len)
    if "messages" in record:
        return tokenize_chat(tokenizer, template, record["messages"], max_len, mode)
    # preference: the chosen conversation, for previews and statistics
    return tokenize_chat(tokenizer, template, record["prompt"] + record["chosen"], max_len, mode)
