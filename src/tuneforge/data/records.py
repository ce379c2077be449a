"""One raw record → one canonical record, field by field, every field type-checked (formats.py holds
the table of formats built from these converters, their detection and column mapping).

Every value read from a file may be of any JSON type: each structural field is type-checked before it
is used (a role that is a list must be an error, not ``TypeError: unhashable type``). Text follows one
rule for JSON, CSV and Parquet (``_as_text``). Problems name the record's file, line, index and field.
"""

from __future__ import annotations

import json
import math

from tuneforge.errors import Problem

from .limits import short
from .parquet import TemporalText
from .problem_codes import problem
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
    "developer": "system",  # OpenAI's name for system instructions since 2024
}
MESSAGE_KEYS = ("tool_calls", "tool_call_id", "name")  # kept on canonical messages for chat templates


class RecordProblems:
    """Collects problems for one raw row, filling in its location."""

    def __init__(self, row: RawRow, sink: list[Problem]):
        self.row, self.sink, self.count = row, sink, 0
        self.numbers: list[str] = []  # fields whose number was taken as text

    def add(self, field: str | None, code: str, **params) -> None:
        """The problem ``code`` (data/problem_codes.py) with its params, at this row's ``field``."""
        self.count += 1
        self.sink.append(self.at(field, code, **params))

    def at(self, field: str | None, code: str, **params) -> Problem:
        row = self.row
        return problem(code, file=row.file, line=row.line, record=row.index + 1, field=field, **params)


def record_turns(record: dict) -> list[dict]:
    """The conversation a chat record is, or for previews, statistics and duplicate checks the one a
    preference pair (prompt + chosen), a KTO record (prompt + completion) or a GRPO prompt stands for."""
    answer = record.get("chosen") or record.get("completion") or []
    return record.get("messages") or record["prompt"] + answer


def record_texts(record: dict):
    """Every text of a canonical record, in order (a preference pair's rejected answer last)."""
    if "text" in record:
        yield record["text"]
        return
    for m in record_turns(record) + record.get("rejected", []):
        yield m["content"]


def _type_name(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_text(value, field: str, probs: RecordProblems) -> str | None:
    """A text value, by one rule for JSON, CSV and Parquet: a string (every CSV cell is one), or a
    finite number taken as its text (noted, and warned about once per dataset: a spreadsheet turns "42"
    into 42, but a number where a conversation was expected is odd). None is returned, with the
    problem added, for anything else: booleans, lists, objects, and Parquet timestamps, dates, times
    and durations, whose text depends on the writer's unit and time zone."""
    if isinstance(value, TemporalText):
        probs.add(
            field, "parquet_temporal", kind=value.kind, column=repr(value.column), value=short(str(value))
        )
        return None
    if isinstance(value, str):
        if not value.isascii() and not _encodable(value):
            probs.add(field, "lone_surrogate")
            return None
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            probs.add(field, "number_not_finite", value=str(value))
            return None
        probs.numbers.append(field)
        return str(value)
    probs.add(field, "not_text", got=_type_name(value))
    return None


def _text(row: dict, key: str, probs: RecordProblems, *, required: bool = True, fmt: str = "") -> str | None:
    value = row.get(key)
    if value is None or (isinstance(value, float) and value != value):  # missing or NaN (CSV/Parquet)
        if required:
            probs.add(key, "missing_field", key=key, format=fmt)
        return None
    return _as_text(value, key, probs)


def _history(row: dict, key: str, probs: RecordProblems) -> list[dict]:
    """[[question, answer], ...] before the last turn; a null or non-text turn is an error (it used to
    become the text "None")."""
    value = row.get(key)
    if value is None or (isinstance(value, str | list) and not value):
        return []
    messages: list[dict] = []
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        probs.add(key, "bad_history")
        return []
    for i, (q, a) in enumerate(value):
        question = _as_text(q, f"{key}[{i}][0]", probs)
        answer = _as_text(a, f"{key}[{i}][1]", probs)
        if question is None or answer is None:
            return []
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages


def single_turn(prompt_key: str, query_key: str | None, response_key: str, fmt: str):
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


def _content(turn: dict, where: str, content_key: str, role: str, probs: RecordProblems) -> str | None:
    """A turn's text: a string, a number, or OpenAI's list of text parts (joined as the API does)."""
    content = turn.get(content_key)
    field = f"{where}.{content_key}"
    if content is None and role == "assistant" and turn.get("tool_calls"):
        return ""
    if isinstance(content, list):
        texts = []
        for p, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                shown = short(kind) if kind is not None else _type_name(part)
                probs.add(f"{field}[{p}]", "non_text_part", got=shown)
                return None
            texts.append(part["text"])
        return "".join(texts)
    return _as_text(content, field, probs)


def _tool_calls(value, where: str, probs: RecordProblems) -> list | None:
    """OpenAI tool calls: [{"type": "function", "function": {"name": str, "arguments": str|object}}]."""
    field = f"{where}.tool_calls"
    if not isinstance(value, list) or not value:
        probs.add(field, "no_tool_calls")
        return None
    for c, call in enumerate(value):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            probs.add(f"{field}[{c}]", "bad_tool_call")
            return None
    if not _encodable(json.dumps(value, ensure_ascii=False)):
        probs.add(field, "lone_surrogate")
        return None
    return value


def _messages(value, key: str, probs: RecordProblems, role_key: str, content_key: str) -> list[dict] | None:
    if not isinstance(value, list):
        probs.add(key, "turns_not_list", got=_type_name(value))
        return None
    if not value:
        probs.add(key, "empty_conversation")
        return None
    out = []
    for t, turn in enumerate(value):
        where = f"{key}[{t}]"
        if not isinstance(turn, dict):
            probs.add(where, "turn_not_object", got=_type_name(turn))
            return None
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in ROLE_ALIASES:
            known = ", ".join(sorted(ROLE_ALIASES))
            probs.add(f"{where}.{role_key}", "unknown_role", role=short(role), known=known)
            return None
        canonical = ROLE_ALIASES[role]
        content = _content(turn, where, content_key, canonical, probs)
        if content is None:
            return None
        message = {"role": canonical, "content": content}
        if turn.get("tool_calls") is not None and canonical == "assistant":
            calls = _tool_calls(turn["tool_calls"], where, probs)
            if calls is None:
                return None
            message["tool_calls"] = calls
        for extra in ("tool_call_id", "name"):
            if canonical == "tool" and isinstance(turn.get(extra), str):
                message[extra] = turn[extra]
        out.append(message)
    return out


def conversation(key: str, role_key: str, content_key: str):
    """sharegpt (from/value), OpenAI messages and ChatGLM-style conversations (role/content)."""

    def convert(row: dict, probs: RecordProblems) -> dict | None:
        if key not in row:
            probs.add(key, "missing_turns", key=key)
            return None
        messages = _messages(row[key], key, probs, role_key, content_key)
        if messages is None:
            return None
        system = _text(row, "system", probs, required=False)
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        if not any(m["role"] == "assistant" for m in messages):
            probs.add(key, "no_assistant_turn")
            return None
        record = {"messages": messages}
        tools = row.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not _encodable(json.dumps(tools, ensure_ascii=False)):
                probs.add("tools", "bad_tools", got=_type_name(tools))
                return None
            record["tools"] = tools
        return record

    return convert


def text_record(row: dict, probs: RecordProblems) -> dict | None:
    text = _text(row, "text", probs, fmt="text")
    return None if text is None else {"text": text}


def _turn_keys(turns: list) -> tuple[str, str]:
    """sharegpt turns say who speaks with from/value, the rest with role/content."""
    first = turns[0] if turns else None
    return ("from", "value") if isinstance(first, dict) and "from" in first else ("role", "content")


def preference(
    row: dict,
    probs: RecordProblems,
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
    prompt_key: str = "prompt",
) -> dict | None:
    """prompt/chosen/rejected; the keys are parameters so that a problem names the file's own field
    (OpenAI's DPO lines call them input.messages, preferred_output and non_preferred_output)."""

    def side(key: str) -> list[dict] | None:
        value = row.get(key)
        if isinstance(value, dict):  # one turn, as in LLaMA-Factory's sharegpt preference pairs
            value = [value]
        if isinstance(value, list):
            return _messages(value, key, probs, *_turn_keys(value))
        if value is not None and not isinstance(value, bool):
            text = _as_text(value, key, probs)
            return None if text is None else [{"role": "assistant", "content": text}]
        probs.add(key, "bad_preference_side", key=key, got="nothing" if value is None else _type_name(value))
        return None

    chosen, rejected = side(chosen_key), side(rejected_key)
    prompt_value = row.get(prompt_key)
    if isinstance(prompt_value, str | int | float) and not isinstance(prompt_value, bool):
        system = _text(row, "system", probs, required=False)
        text = _as_text(prompt_value, prompt_key, probs)
        if text is None:
            return None
        prompt = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
    elif isinstance(prompt_value, list):
        prompt = _messages(prompt_value, prompt_key, probs, *_turn_keys(prompt_value))
    elif prompt_value is None and chosen and rejected:
        # chosen/rejected as whole conversations: the shared prefix is the prompt.
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    else:
        probs.add(prompt_key, "bad_prompt", key=prompt_key)
        return None
    if chosen is None or rejected is None or prompt is None:
        return None
    if not prompt:
        probs.add(prompt_key, "no_prompt")
        return None
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def prompt_record(row: dict, probs: RecordProblems) -> dict | None:
    """A GRPO prompt: ``prompt`` (a string or messages ending with a user turn), optional ``system`` and
    ``answer`` (the reference an exact_match reward compares the final answer with)."""
    value = row.get("prompt")
    if isinstance(value, list):
        prompt = _messages(value, "prompt", probs, *_turn_keys(value))
    else:
        text = _text(row, "prompt", probs, fmt="prompt")
        system = _text(row, "system", probs, required=False)
        system_turn = [{"role": "system", "content": system}] if system else []
        prompt = None if text is None else system_turn + [{"role": "user", "content": text}]
    answer = _text(row, "answer", probs, required=False)
    if prompt is None:
        return None
    if prompt[-1]["role"] != "user":
        probs.add("prompt", "prompt_ends_with", role=prompt[-1]["role"])
        return None
    return {"prompt": prompt, **({"answer": answer} if answer is not None else {})}


def openai_preference(row: dict, probs: RecordProblems) -> dict | None:
    """OpenAI's DPO lines: {"input": {"messages": [...]}, "preferred_output": [...],
    "non_preferred_output": [...]}."""
    source = row.get("input")
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list):
        got = "an object without a 'messages' list" if isinstance(source, dict) else _type_name(source)
        probs.add("input", "openai_preference_input", got=got)
        return None
    pair = {"input.messages": source["messages"], **row}
    return preference(pair, probs, "preferred_output", "non_preferred_output", "input.messages")
