"""Dataset formats: the table of them, detection from the keys records carry, column mapping (--map),
and conversion to canonical records (the converters, field by field, are in records.py).

Canonical records are plain dicts of one of three kinds:
  chat        {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}
  text        {"text": str}
  preference  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}  (TRL's shape)
  feedback    {"prompt": [messages], "completion": [messages], "label": bool}  (TRL's KTO shape)
  prompt      {"prompt": [messages], "answer": str (optional)}  (GRPO's prompts)
An assistant message may carry OpenAI ``tool_calls`` and a tool message its ``tool_call_id``/``name``;
a chat record may carry the ``tools`` it was given.

"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.errors import ConfigError, Problem

from .feedback import feedback
from .limits import short
from .problem_codes import message, problem
from .readers import RawRow
from .records import (
    RecordProblems,
    conversation,
    openai_preference,
    preference,
    prompt_record,
    single_turn,
    text_record,
)


@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # chat | text | preference
    keys: tuple[str, ...]  # keys whose presence identifies the format
    convert: Callable[[dict, RecordProblems], dict | None]
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format(
            "preference",
            "preference",
            ("chosen", "rejected"),
            preference,
            "prompt/chosen/rejected (strings or message lists)",
        ),
        Format(
            "openai_preference",
            "preference",
            ("preferred_output", "non_preferred_output"),
            openai_preference,
            "input.messages/preferred_output/non_preferred_output (OpenAI preference fine-tuning)",
        ),
        Format(  # before prompt_completion, whose keys its records also carry
            "kto",
            "feedback",
            ("label", "prompt", "completion"),
            feedback,
            "prompt/completion/label: true|false, or messages with a label (KTO's unpaired feedback)",
        ),
        Format(
            "alpaca",
            "chat",
            ("instruction", "output"),
            single_turn("instruction", "input", "output", "alpaca"),
            "instruction/input/output, optional system and history",
        ),
        Format(
            "sharegpt",
            "chat",
            ("conversations", "from"),
            conversation("conversations", "from", "value"),
            "conversations: [{from, value}], optional system",
        ),
        Format(
            "conversations",
            "chat",
            ("conversations", "role"),
            conversation("conversations", "role", "content"),
            "conversations: [{role, content}] (ChatGLM)",
        ),
        Format(
            "openai",
            "chat",
            ("messages",),
            conversation("messages", "role", "content"),
            "messages: [{role, content}] (OpenAI chat)",
        ),
        Format(
            "prompt_completion",
            "chat",
            ("prompt", "completion"),
            single_turn("prompt", "query", "completion", "prompt/completion"),
            "prompt/completion",
        ),
        Format(
            "mapped",
            "chat",
            ("prompt", "response"),
            single_turn("prompt", "query", "response", "mapped"),
            "any columns mapped with --map prompt=COL,response=COL[,system=,query=,history=]",
        ),
        Format("text", "text", ("text",), text_record, "raw text for continual pretraining"),
        # keys (prompt, answer); a record with a prompt alone is found by PARTIAL_KEYS' last entry, so
        # that a pair missing its chosen side is still a preference pair with a problem
        Format("prompt", "prompt", ("prompt", "answer"), prompt_record, "prompt, optional answer (GRPO)"),
    ]
}


def _signature(row: dict) -> str | None:
    keys = set(row)
    for fmt in FORMATS.values():
        first = fmt.keys[0]
        if fmt.name in ("sharegpt", "conversations"):
            conv = row.get("conversations")
            if isinstance(conv, list) and conv and isinstance(conv[0], dict) and fmt.keys[1] in conv[0]:
                return fmt.name
            continue
        if first in keys and all(k in keys for k in fmt.keys):
            return fmt.name
    # A record missing a field still says which format it meant; conversion then names what is missing.
    for key, name in PARTIAL_KEYS:
        if key in keys:
            return name
    return None


PARTIAL_KEYS = [
    ("preferred_output", "openai_preference"),
    ("non_preferred_output", "openai_preference"),
    ("instruction", "alpaca"),
    ("messages", "openai"),
    ("conversations", "sharegpt"),
    ("chosen", "preference"),
    ("rejected", "preference"),
    ("completion", "prompt_completion"),
    ("response", "mapped"),
    ("text", "text"),
    ("prompt", "prompt"),
]


def shown_keys(keys, limit: int = 20) -> str:
    """Keys seen in records, for a message: sorted, each cut short, at most ``limit`` of them."""
    names = sorted(short(k) for k in keys)
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return "[" + ", ".join(names[:limit]) + more + "]"


def detect_from(signatures: Counter, keys) -> str:
    """The format most sampled records match (``signatures`` counts ``row_signature`` results);
    a ConfigError naming the keys seen otherwise."""
    name, _ = signatures.most_common(1)[0] if signatures else (None, 0)
    if name is None:
        raise ConfigError(message("format_undetected", **undetected_params(keys)))
    return name


def undetected_params(keys) -> dict:
    """The params of ``format_undetected``: the keys seen, the formats to choose from."""
    return {"keys": shown_keys(keys), "formats": ", ".join(FORMATS)}


def row_signature(row: dict) -> str | None:
    """The format one record's keys say it is in (None when they say nothing)."""
    return _signature(row)


def detect_format(rows: list[RawRow]) -> str:
    """The format most of the first records match; a ConfigError naming the keys seen otherwise."""
    return detect_from(
        Counter(_signature(r.data) for r in rows[:200]), {k for r in rows[:50] for k in r.data}
    )


def parse_mapping(text: str | dict | None) -> dict[str, str]:
    """``prompt=content,response=summary`` → {"prompt": "content", "response": "summary"}."""
    if not text:
        return {}
    if isinstance(text, dict):
        return dict(text)
    mapping = {}
    for part in text.split(","):
        key, sep, column = part.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ConfigError(
                f"--map {short(text)}: expected KEY=COLUMN pairs separated by commas, "
                "e.g. prompt=content,response=summary."
            )
        mapping[key.strip()] = column.strip()
    return mapping


def map_row(data: dict, mapping: dict[str, str]) -> dict:
    """One record with its mapped columns renamed (a column a record lacks maps to None)."""
    if not mapping:
        return data
    columns = set(mapping.values())
    return {
        **{k: v for k, v in data.items() if k not in columns},
        **{key: data.get(col) for key, col in mapping.items()},
    }


def missing_columns(mapping: dict[str, str], seen: set[str], columns) -> list[Problem]:
    """A problem for each mapped column that no record had (``seen``); ``columns`` are some of the
    columns records did have, to choose from."""
    return [
        problem("mapped_column_missing", column=short(c), columns=shown_keys(columns))
        for c in dict.fromkeys(mapping.values())
        if c not in seen
    ]


def apply_mapping(rows: list[RawRow], mapping: dict[str, str]) -> list[Problem]:
    """Rename mapped columns in place; report columns that no record has."""
    if not mapping:
        return []
    seen = {k for r in rows for k in r.data}
    missing = missing_columns(mapping, seen, seen)
    if missing:
        return missing
    for r in rows:
        r.data = map_row(r.data, mapping)
    return []


def _near(fmt: Format, other: Format) -> bool:
    # A feedback (KTO) record is a chat record with a label; one without it, or a chat dataset forced
    # with --format whose records carry labels, is read as the dataset's format.
    return other.keys[0] in fmt.keys or {fmt.kind, other.kind} == {"chat", "feedback"}


def convert_row(row: RawRow, fmt: Format, probs: RecordProblems) -> dict | None:
    """The canonical record of one raw row, or None with its problems added to ``probs``."""
    other = _signature(row.data)
    # Formats sharing their identifying key (prompt/completion vs mapped prompt/response) are near
    # enough; anything else means records of another format slipped into this dataset.
    if other and other != fmt.name and not _near(fmt, FORMATS[other]):
        probs.add(None, "mixed_formats", other=other, format=fmt.name)
        return None
    record = fmt.convert(row.data, probs)
    return record if record is not None and probs.count == 0 else None


def convert_rows(rows: list[RawRow], fmt: Format, errors: list[Problem]) -> list[dict]:
    records = []
    for row in rows:
        record = convert_row(row, fmt, RecordProblems(row, errors))
        if record is not None:
            records.append(record)
    return records
