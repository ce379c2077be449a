"""One render per conversation: a template's layout learnt once per sequence of roles.

``tokenize.assistant_spans`` renders a conversation, then each prefix up to an answer, to find where
the answers are: two renders per alpaca record, a third of validating 52,000 of them. Most templates
write each message's content as given between text that depends only on the roles, so the layout is
learnt once from a conversation of placeholders (the text between the placeholders, and where each
answer's span starts and ends relative to them) and each conversation is then rendered once: its
text must equal the layout filled with its contents, or it is taken the slow way (a template that
trims, rewrites or branches on a content, a message with keys other than role and content; and a
conversation of more than two answers, which ``answer_spans`` finds without a render per prefix). Where
the layout holds, every message's content is at a known place, not searched for in the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tokenize import _MARK, _prefix_span, _render, answer_spans, end_of_turn

MAX_LAYOUTS = 256  # role sequences remembered per process (a dataset has a few)


@dataclass(frozen=True)
class Layout:
    pieces: tuple[str, ...]  # the template's text around the contents: len(messages) + 1 pieces
    # each answer's raw span (before ``end_of_turn``) as (piece or content index, offset) pairs:
    # ("p", k, d) is d characters into piece k, ("c", k, 0) the start of content k, ("c", k, 1) its end
    spans: tuple[tuple[tuple, tuple], ...]


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # the characters the loss is computed on
    positions: list[tuple[int, int]] | None  # each message's content in ``text``, where the layout held


_layouts: dict[tuple, Layout | None] = {}


def render_conversation(tokenizer, template: str, messages: list[dict], mode: str = "assistant") -> Rendered:
    """``assistant_spans`` of ``messages`` with each content's place, rendering once where a layout holds.
    Raises what the template raises for the conversation, as ``assistant_spans``."""
    text = _render(tokenizer, template, messages)
    layout = _layout_for(tokenizer, template, messages) if _plain(messages) else None
    placed = _place(layout, text, messages) if layout is not None else None
    if placed is None:
        if mode == "all":
            return Rendered(text, [(0, len(text))], None)
        spans = answer_spans(tokenizer, template, messages, text)[1]
        return Rendered(text, spans[-1:] if mode == "last" else spans, None)
    starts, positions = placed
    if mode == "all":
        return Rendered(text, [(0, len(text))], positions)
    from .templates import END_OF_TURN_MARKERS

    stops = tuple(m for m in (tokenizer.eos_token, *END_OF_TURN_MARKERS) if m)
    spans = []
    for a, b in layout.spans:
        start, end = _at(a, starts, positions), _at(b, starts, positions)
        spans.append((start, end_of_turn(text, start, end, stops)))
    return Rendered(text, spans[-1:] if mode == "last" else spans, positions)


def _plain(messages: list[dict]) -> bool:
    return all(len(m) == 2 and type(m.get("content")) is str and type(m.get("role")) is str for m in messages)


def _place(layout: Layout, text: str, messages: list[dict]):
    """(start of each piece, (start, end) of each content) in ``text``, or None where ``text`` is not the
    layout filled with the contents."""
    starts, positions, at = [], [], 0
    for piece, message in zip(layout.pieces, messages, strict=False):
        if not text.startswith(piece, at):
            return None
        starts.append(at)
        at += len(piece)
        content = message["content"]
        if not text.startswith(content, at):
            return None
        positions.append((at, at + len(content)))
        at += len(content)
    if text[at:] != layout.pieces[-1]:
        return None
    starts.append(at)
    return starts, positions


def _at(where: tuple, starts: list[int], positions: list[tuple[int, int]]) -> int:
    kind, k, d = where
    return starts[k] + d if kind == "p" else positions[k][d]


def _layout_for(tokenizer, template: str, messages: list[dict]) -> Layout | None:
    # the special tokens are the other values a template is rendered with
    key = (template, tuple(m["role"] for m in messages), repr(getattr(tokenizer, "special_tokens_map", None)))
    if key not in _layouts:
        if len(_layouts) >= MAX_LAYOUTS:
            _layouts.clear()
        _layouts[key] = _learn(tokenizer, template, [m["role"] for m in messages])
    return _layouts[key]


def _learn(tokenizer, template: str, roles: list[str]) -> Layout | None:
    if roles.count("assistant") > 2:
        # Rendering the prefix before each answer costs time in the square of the conversation's length;
        # ``answer_spans`` has the way that does not (two renders and four prefixes): it stays with it.
        return None
    marked = [{"role": role, "content": _MARK.format(k)} for k, role in enumerate(roles)]
    try:
        text = _render(tokenizer, template, marked)
    except Exception:  # noqa: BLE001 (a template that refuses placeholders: every conversation the slow way)
        return None
    pieces, bounds, at = [], [], 0  # bounds: (start, end) of each placeholder
    for k in range(len(roles)):
        found = text.find(_MARK.format(k), at)
        if found < 0 or _MARK.format(k) in text[found + 1 :]:
            return None
        pieces.append(text[at:found])
        bounds.append((found, found + len(_MARK.format(k))))
        at = found + len(_MARK.format(k))
    pieces.append(text[at:])
    piece_starts = [0] + [end for _, end in bounds]
    spans = []
    for i, role in enumerate(roles):
        if role != "assistant":
            continue
        try:
            span = _prefix_span(tokenizer, template, marked, text, i)
        except Exception:  # noqa: BLE001
            return None
        if span is None:
            return None
        where = [_where(p, bounds, piece_starts) for p in span]
        if None in where:
            return None
        spans.append(tuple(where))
    return Layout(tuple(pieces), tuple(spans))


def _where(position: int, bounds: list[tuple[int, int]], piece_starts: list[int]) -> tuple | None:
    """``position`` of the placeholder text as a place in the layout; None inside a placeholder."""
    for k, (a, b) in enumerate(bounds):
        if position == a:
            return ("c", k, 0)
        if position == b:
            return ("c", k, 1)
        if a < position < b:
            return None
    k = max(k for k, s in enumerate(piece_starts) if s <= position)
    return ("p", k, position - piece_starts[k])
