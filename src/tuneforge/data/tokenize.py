"""Turn canonical records into token ids and labels, with the loss on exactly the tokens to learn.

Chat records are rendered with the chat template; the character spans of assistant turns are where
rendering the conversation up to each turn ends (read off two renders of the whole, see
``answer_spans``), and tokens are matched to spans through the fast tokenizer's offsets. That works for
any template that renders prefixes as prefixes (all common ones). A spec's ``keep_answers`` truncation
tokenizes each prompt and answer alone instead and cuts them as LLaMA-Factory does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import record_turns

IGNORE_INDEX = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenCount:
    """What statistics need of a tokenized record (``Tokenized`` without its ids and labels)."""

    length: int
    trained: int


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
    if mode == "all":
        text = _render(tokenizer, template, messages)
        return text, [(0, len(text))]
    text, spans = answer_spans(tokenizer, template, messages)
    return text, spans[-1:] if mode == "last" else spans


def answer_spans(tokenizer, template: str, messages: list[dict], text: str | None = None):
    """The rendered text and the (start, end) character span of every assistant turn, in order
    (``text``: the conversation rendered already).

    A turn's span runs from the end of the generation prompt before it to its stop token. Rendering each
    prefix of the conversation to find them costs time in the square of its length (10,000 turns: over
    a minute), so the spans are first read off two renders of the whole conversation and checked
    (``_spans_by_layout``); a template those checks do not fit is rendered prefix by prefix, as before.
    """
    from .templates import END_OF_TURN_MARKERS

    text = _render(tokenizer, template, messages) if text is None else text
    stops = tuple(m for m in (tokenizer.eos_token, *END_OF_TURN_MARKERS) if m)
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    # Up to two answers the prefix renders are the fewer (2 per answer; the layout check costs 5).
    raw = _spans_by_layout(tokenizer, template, messages, text, answers) if len(answers) > 2 else None
    if raw is None:
        return text, _spans_by_prefixes(tokenizer, template, messages, text, answers, stops)
    return text, [(start, end_of_turn(text, start, end, stops)) for start, end in raw]


def _prefix_span(tokenizer, template: str, messages: list[dict], text: str, i: int):
    """Assistant turn ``i``'s span as the renders of the conversation up to it give it, or None when
    those renders are not prefixes of the whole (a template that rewrites earlier turns)."""
    before = _render(tokenizer, template, messages[:i], add_generation_prompt=True) if i else ""
    # The conversation through its last message is the whole: ``text`` is that render already (a
    # third render per record was a third of the time validating alpaca data took).
    through = text if i == len(messages) - 1 else _render(tokenizer, template, messages[: i + 1])
    if text.startswith(before) and text.startswith(through) and len(through) > len(before):
        return len(before), len(through)
    return None


def _spans_by_prefixes(tokenizer, template: str, messages: list[dict], text: str, answers: list[int], stops):
    spans, cursor = [], 0
    for i in answers:
        span = _prefix_span(tokenizer, template, messages, text, i)
        if span is None:  # a template that rewrites earlier turns: fall back to finding the content itself
            start = text.find(messages[i]["content"], cursor)
            if start < 0:
                continue
            span = (start, start + len(messages[i]["content"]))
        span = (span[0], end_of_turn(text, span[0], span[1], stops))
        spans.append(span)
        cursor = span[1]
    return spans


_MARK = "\ue000{}\ue001"  # private-use characters: a placeholder no template writes or changes


def _spans_by_layout(tokenizer, template: str, messages: list[dict], text: str, answers: list[int]):
    """Every assistant span from two renders of the whole conversation, or None where unsure.

    The conversation is rendered again with each answer replaced by a placeholder: where the
    placeholders land is where the answers are, provided putting the answers back gives the text
    exactly. The text a turn's span holds before and after its answer (a template's layout, such as
    mistral's space before it and chatml's ``<|im_end|>`` after it) comes from the first and last turns
    rendered prefix by prefix, and must be the same around every answer.
    """
    marked = list(messages)
    for k, i in enumerate(answers):
        marked[i] = {**messages[i], "content": _MARK.format(k)}
    try:
        marked_text = _render(tokenizer, template, marked)
    except Exception:  # a template that reads the answers (e.g. for reasoning tags) may refuse a placeholder
        return None
    pieces, where, pos, length = [], [], 0, 0
    for k, i in enumerate(answers):
        at = marked_text.find(_MARK.format(k), pos)
        if at < 0:
            return None
        content = messages[i]["content"]
        pieces += [marked_text[pos:at], content]
        length += at - pos
        where.append((length, length + len(content)))
        length += len(content)
        pos = at + len(_MARK.format(k))
    pieces.append(marked_text[pos:])
    if "".join(pieces) != text:
        return None
    first = _prefix_span(tokenizer, template, messages, text, answers[0])
    last = _prefix_span(tokenizer, template, messages, text, answers[-1])
    if first is None or last is None or first[0] > where[0][0] or first[1] < where[0][1]:
        return None
    lead, trail = text[first[0] : where[0][0]], text[where[0][1] : first[1]]
    spans, cursor = [], 0
    for a, b in where:
        start, end = a - len(lead), b + len(trail)
        if start < cursor or text[start:a] != lead or text[b:end] != trail:
            return None
        spans.append((start, end))
        cursor = end
    return spans if spans[-1] == last else None


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

    if not fits_whole(text, max_len):
        cut = max_len * CHARS_PER_TOKEN + CUT_MARGIN
        ids, offsets = encode(text[:cut])
        if len(ids) > max_len + 1 and offsets[max_len][1] <= cut - CUT_MARGIN:
            return ids[: max_len + 1], offsets[: max_len + 1]
    return encode(text)


def fits_whole(text: str, max_len: int | None) -> bool:
    """Whether ``_encode_head`` tokenizes ``text`` whole (so a batch call gives the same tokens)."""
    return max_len is None or len(text) <= max_len * CHARS_PER_TOKEN + CUT_MARGIN


def tokenize_text_with_spans(tokenizer, text: str, spans, max_len: int | None) -> Tokenized:
    ids, offsets = _encode_head(tokenizer, text, max_len)
    return label_spans(ids, offsets, spans, max_len)


def label_spans(ids, offsets, spans, max_len: int | None) -> Tokenized:
    """Labels from the tokens' character offsets: a token is trained when it overlaps a span."""
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
    tokenizer,
    template: str,
    messages: list[dict],
    max_len: int | None,
    mode: str = "assistant",
    truncation: str = "keep_head",
) -> Tokenized:
    """``truncation`` (the spec's data.truncation): keep_head keeps the first max_len tokens of the
    rendered conversation; keep_answers is LLaMA-Factory's rule (see ``tokenize_keep_answers``)."""
    if truncation == "keep_answers":
        return tokenize_keep_answers(tokenizer, template, messages, max_len, mode)
    text, spans = assistant_spans(tokenizer, template, messages, mode)
    return tokenize_text_with_spans(tokenizer, text, spans, max_len)


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How many prompt and answer tokens of a turn to keep within ``cutoff_len``: LLaMA-Factory's rule
    (data/processor/processor_utils.py), so that a converted config cuts where it would. A short answer
    is kept whole and the prompt shortened; a short prompt is kept and the answer shortened; two long
    ones share the room in proportion to their lengths."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def _segment_ids(tokenizer, segments: list[str], max_len: int | None) -> list[tuple[list[int], int]]:
    """(ids, full length in tokens) of each segment, each tokenized alone as LLaMA-Factory does; of a
    segment too long to tokenize whole, the ids of its head and its length counted in pieces."""
    limit = None if max_len is None else max_len * CHARS_PER_TOKEN + CUT_MARGIN
    short = [seg for seg in segments if limit is None or len(seg) <= limit]
    encoded = iter(tokenizer(short, add_special_tokens=False)["input_ids"] if short else [])
    out = []
    for seg in segments:
        if limit is None or len(seg) <= limit:
            ids = list(next(encoded))
            out.append((ids, len(ids)))
            continue
        ids = list(_encode_head(tokenizer, seg, max_len)[0])
        # Its length only sets the share of a long prompt and a long answer that are both cut: counted in
        # pieces (a token may merge across a cut, a few in millions), never held whole.
        count = sum(
            len(tokenizer(seg[i : i + limit], add_special_tokens=False)["input_ids"])
            for i in range(0, len(seg), limit)
        )
        out.append((ids, max(count, len(ids))))
    return out


def tokenize_keep_answers(
    tokenizer, template: str, messages: list[dict], max_len: int | None, mode: str = "assistant"
) -> Tokenized:
    """LLaMA-Factory's supervised encoding: each turn is (the text before its answer, the answer), each
    tokenized alone; turn by turn, while room is left, ``infer_seqlen`` keeps the head of each, so a long
    prompt is shortened and its answer still trained. Mode ``last`` (its ``mask_history``) fills the room
    from the last turn backwards; ``all`` (``train_on_prompt``) trains the prompts too."""
    text, spans = answer_spans(tokenizer, template, messages)
    segments, cursor = [], 0
    for start, end in spans:
        segments += [text[cursor:start], text[start:end]]
        cursor = end
    if cursor < len(text) or not spans:  # layout after the last answer, or a conversation without one
        segments += [text[cursor:], ""]
    encoded = _segment_ids(tokenizer, segments, max_len)
    turns = [(encoded[k], encoded[k + 1]) for k in range(0, len(encoded), 2)]
    last_answer = len(spans) - 1
    order = list(range(len(turns)))[::-1] if mode == "last" else list(range(len(turns)))
    kept: dict[int, tuple[list[int], list[int]]] = {}
    total, truncated = 0, False
    for n in order:
        (source, source_len), (target, target_len) = turns[n]
        if max_len is None:
            keep_source, keep_target = source_len, target_len
        elif total >= max_len:
            truncated = truncated or source_len + target_len > 0
            continue
        else:
            keep_source, keep_target = infer_seqlen(source_len, target_len, max_len - total)
        truncated = truncated or (keep_source, keep_target) != (source_len, target_len)
        source, target = source[:keep_source], target[:keep_target]
        train_target = n <= last_answer and (mode != "last" or n == last_answer)
        kept[n] = (
            source + target,
            (source if mode == "all" else [IGNORE_INDEX] * len(source))
            + (target if train_target or mode == "all" else [IGNORE_INDEX] * len(target)),
        )
        total += len(source) + len(target)
    ids = [t for n in sorted(kept) for t in kept[n][0]]
    labels = [t for n in sorted(kept) for t in kept[n][1]]
    return Tokenized(ids, labels, truncated)


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


def chat_messages(record: dict) -> list[dict] | None:
    """The conversation a record is tokenized as; None for raw text. A pair: the chosen conversation;
    KTO: prompt + completion; a GRPO prompt alone (previews, statistics)."""
    if "text" in record:
        return None
    return record["messages"] if "messages" in record else record_turns(record)


def tokenize_record(
    tokenizer, template: str, record: dict, max_len: int | None, mode: str = "assistant"
) -> Tokenized:
    messages = chat_messages(record)
    if messages is None:
        return tokenize_pretrain(tokenizer, record["text"], max_len)
    return tokenize_chat(tokenizer, template, messages, max_len, mode)
