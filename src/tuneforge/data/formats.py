"""Dataset formats: detection from the keys records carry, and conversion to canonical records.

Canonical records are plain dicts of one of three kinds:
  chat        {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}
  text        {"text": str}
  preference  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}  (TRL's shape)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.errors import ConfigError, Problem

from .readers import RawRow

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "function_call": "assistant",
}


class RecordProblems:
    """Collects problems for one raw row, filling in its location."""

    def __init__(self, row: RawRow, sink: list[Problem]):
        self.row, self.sink, self.count = row, sink, 0

    def add(self, field: str | None, message: str) -> None:
        self.count += 1
        self.sink.append(
            Problem(message, file=self.row.file, line=self.row.line, record=self.row.index, field=field)
        )


def _text(row: dict, key: str, probs: RecordProblems, *, required: bool = True, fmt: str = "") -> str | None:
    value = row.get(key)
    if value is None or (isinstance(value, float) and value != value):  # missing or NaN (CSV/Parquet)
        if required:
            probs.add(
                key,
                f"expected {key!r} (string) in {fmt} record; got nothing. Add the field or map "
                f"another column with --map {key}=COLUMN.",
            )
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        probs.add(key, f"expected a string; got {type(value).__name__}.")
        return None
    return value


def _history(row: dict, key: str, probs: RecordProblems) -> list[dict]:
    value = row.get(key)
    if value in (None, "", []):
        return []
    messages: list[dict] = []
    if not isinstance(value, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        probs.add(key, "expected history as a list of [question, answer] pairs.")
        return []
    for q, a in value:
        messages += [{"role": "user", "content": str(q)}, {"role": "assistant", "content": str(a)}]
    return messages


def _single_turn(prompt_key: str, query_key: str | None, response_key: str, fmt: str):
    """alpaca and prompt/completion: one user turn (prompt + optional query) and one answer."""

    def convert(row: dict, probs: RecordProblems) -> dict | None:
        prompt = _text(row, prompt_key, probs, fmt=fmt)
        query = _text(row, query_key, probs, required=False) if query_key else None
        response = _text(row, response_key, probs, fmt=fmt)
        system = _text(row, "system", probs, required=False)
        history = _history(row, "history", probs)
        if prompt is None or response is None:
            return None
        user = f"{prompt}\n{query}" if query else prompt
        messages = [{"role": "system", "content": system}] if system else []
        messages += history + [{"role": "user", "content": user}, {"role": "assistant", "content": response}]
        return {"messages": messages}

    return convert


def _messages(value, key: str, probs: RecordProblems, role_key: str, content_key: str) -> list[dict] | None:
    if not isinstance(value, list):
        probs.add(key, f"expected a list of turns; got {type(value).__name__}.")
        return None
    if not value:
        probs.add(key, "empty conversation.")
        return None
    out = []
    for t, turn in enumerate(value):
        where = f"{key}[{t}]"
        if not isinstance(turn, dict):
            probs.add(where, "expected an object per turn.")
            return None
        role, content = turn.get(role_key), turn.get(content_key)
        if role not in ROLE_ALIASES:
            known = ", ".join(sorted(ROLE_ALIASES))
            probs.add(f"{where}.{role_key}", f"unknown role {role!r}; use one of {known}.")
            return None
        if content is None and ROLE_ALIASES[role] == "assistant" and turn.get("tool_calls"):
            content = ""
        if not isinstance(content, str):
            probs.add(f"{where}.{content_key}", f"expected a string; got {type(content).__name__}.")
            return None
        out.append({"role": ROLE_ALIASES[role], "content": content})
    return out


def _conversation(key: str, role_key: str, content_key: str):
    """sharegpt (from/value), OpenAI messages and ChatGLM-style conversations (role/content)."""

    def convert(row: dict, probs: RecordProblems) -> dict | None:
        if key not in row:
            probs.add(key, f"expected {key!r} (a list of turns); got nothing.")
            return None
        messages = _messages(row[key], key, probs, role_key, content_key)
        if messages is None:
            return None
        system = _text(row, "system", probs, required=False)
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        if not any(m["role"] == "assistant" for m in messages):
            probs.add(key, "conversation has no assistant turn: nothing to train on.")
            return None
        return {"messages": messages}

    return convert


def _text_record(row: dict, probs: RecordProblems) -> dict | None:
    text = _text(row, "text", probs, fmt="text")
    return None if text is None else {"text": text}


def _turn_keys(turns: list) -> tuple[str, str]:
    """sharegpt turns say who speaks with from/value, the rest with role/content."""
    first = turns[0] if turns else None
    return ("from", "value") if isinstance(first, dict) and "from" in first else ("role", "content")


def _preference(row: dict, probs: RecordProblems) -> dict | None:
    def side(key: str) -> list[dict] | None:
        value = row.get(key)
        if isinstance(value, str):
            return [{"role": "assistant", "content": value}]
        if isinstance(value, dict):  # one turn, as in LLaMA-Factory's sharegpt preference pairs
            value = [value]
        if isinstance(value, list):
            return _messages(value, key, probs, *_turn_keys(value))
        probs.add(
            key,
            f"expected {key!r} as a string, a message or a list of messages; got "
            f"{'nothing' if value is None else type(value).__name__}.",
        )
        return None

    chosen, rejected = side("chosen"), side("rejected")
    prompt_value = row.get("prompt")
    if isinstance(prompt_value, str):
        system = _text(row, "system", probs, required=False)
        prompt = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt_value}
        ]
    elif isinstance(prompt_value, list):
        prompt = _messages(prompt_value, "prompt", probs, *_turn_keys(prompt_value))
    elif prompt_value is None and chosen and rejected:
        # chosen/rejected as whole conversations: the shared prefix is the prompt.
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    else:
        probs.add("prompt", "expected 'prompt' as a string or a list of messages.")
        return None
    if chosen is None or rejected is None or prompt is None:
        return None
    if not prompt:
        probs.add("prompt", "preference pair has no prompt.")
        return None
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


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
            _preference,
            "prompt/chosen/rejected (strings or message lists)",
        ),
        Format(
            "alpaca",
            "chat",
            ("instruction", "output"),
            _single_turn("instruction", "input", "output", "alpaca"),
            "instruction/input/output, optional system and history",
        ),
        Format(
            "sharegpt",
            "chat",
            ("conversations", "from"),
            _conversation("conversations", "from", "value"),
            "conversations: [{from, value}], optional system",
        ),
        Format(
            "conversations",
            "chat",
            ("conversations", "role"),
            _conversation("conversations", "role", "content"),
            "conversations: [{role, content}] (ChatGLM)",
        ),
        Format(
            "openai",
            "chat",
            ("messages",),
            _conversation("messages", "role", "content"),
            "messages: [{role, content}] (OpenAI chat)",
        ),
        Format(
            "prompt_completion",
            "chat",
            ("prompt", "completion"),
            _single_turn("prompt", "query", "completion", "prompt/completion"),
            "prompt/completion",
        ),
        Format(
            "mapped",
            "chat",
            ("prompt", "response"),
            _single_turn("prompt", "query", "response", "mapped"),
            "any columns mapped with --map prompt=COL,response=COL[,system=,query=,history=]",
        ),
        Format("text", "text", ("text",), _text_record, "raw text for continual pretraining"),
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
    ("instruction", "alpaca"),
    ("messages", "openai"),
    ("conversations", "sharegpt"),
    ("chosen", "preference"),
    ("rejected", "preference"),
    ("completion", "prompt_completion"),
    ("response", "mapped"),
    ("text", "text"),
]


def detect_format(rows: list[RawRow]) -> str:
    """The format most of the first records match; a ConfigError naming the keys seen otherwise."""
    votes = Counter(_signature(r.data) for r in rows[:200])
    name, _ = votes.most_common(1)[0] if votes else (None, 0)
    if name is None:
        keys = sorted({k for r in rows[:50] for k in r.data})
        raise ConfigError(
            f"could not detect the dataset format from its keys {keys}. Pass --format "
            f"({', '.join(FORMATS)}) or map columns, e.g. --map prompt=content,response=summary."
        )
    return name


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
                f"--map {text!r}: expected KEY=COLUMN pairs separated by commas, "
                "e.g. prompt=content,response=summary."
            )
        mapping[key.strip()] = column.strip()
    return mapping


def apply_mapping(rows: list[RawRow], mapping: dict[str, str]) -> list[Problem]:
    """Rename mapped columns in place; report columns that no record has."""
    if not mapping:
        return []
    seen = {k for r in rows for k in r.data}
    missing = [c for c in mapping.values() if c not in seen]
    if missing:
        return [
            Problem(f"--map names column {c!r}, which no record has; columns are {sorted(seen)}.")
            for c in missing
        ]
    for r in rows:
        r.data = {
            **{k: v for k, v in r.data.items() if k not in mapping.values()},
            **{key: r.data.get(col) for key, col in mapping.items()},
        }
    return []


def convert_rows(rows: list[RawRow], fmt: Format, errors: list[Problem]) -> list[dict]:
    records = []
    for row in rows:
        probs = RecordProblems(row, errors)
        other = _signature(row.data)
        # Formats sharing their identifying key (prompt/completion vs mapped prompt/response) are near
        # enough; anything else means records of another format slipped into this dataset.
        if other and other != fmt.name and FORMATS[other].keys[0] not in fmt.keys:
            probs.add(
                None,
                f"this record is in {other} format but the dataset is {fmt.name}; keep one format "
                "per dataset (or pass --format).",
            )
            continue
        record = fmt.convert(row.data, probs)
        if record is not None and probs.count == 0:
            records.append(record)
    return records
