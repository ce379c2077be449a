"""KTO's unpaired feedback: one answer to a prompt, labelled good (``label: true``) or bad (``false``).

The canonical record is TRL's conversational KTO shape, ``{"prompt": [messages], "completion": [the
assistant's answer], "label": bool}``. The chat part is read by the chat converters of records.py:
``prompt``/``completion`` (optional ``input``, added to the prompt as alpaca's is, ``system`` and
``history``), or a ``messages``/``conversations`` list whose last turn is the answer (LLaMA-Factory's
KTO sets: a sharegpt conversation and its ``kto_tag`` column, mapped to ``label``).
"""

from __future__ import annotations

from .limits import short
from .records import RecordProblems, conversation, single_turn
from .records import _turn_keys as turn_keys  # one rule for which keys a turn uses
from .records import _type_name as type_name

# CSV cells are text: the words a spreadsheet writes for a boolean column are read as one.
LABEL_WORDS = {"true": True, "false": False}
CONVERSATION_KEYS = ("messages", "conversations")

_prompt_completion = single_turn("prompt", "input", "completion", "kto")


def _label(row: dict, probs: RecordProblems) -> bool | None:
    value = row.get("label")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in LABEL_WORDS:
        return LABEL_WORDS[value.strip().lower()]
    missing = value is None or (isinstance(value, float) and value != value)  # NaN: an empty CSV/Parquet cell
    got = "nothing" if missing else f"{type_name(value)} {short(value)}"
    probs.add("label", "bad_label", got=got)
    return None


def feedback(row: dict, probs: RecordProblems) -> dict | None:
    """One raw KTO row → its canonical record, or None with its problems added to ``probs``."""
    label = _label(row, probs)
    key = next((k for k in CONVERSATION_KEYS if k in row and "completion" not in row), None)
    if key:
        turns = row[key]
        chat = conversation(key, *turn_keys(turns if isinstance(turns, list) else []))(row, probs)
    else:
        chat = _prompt_completion(row, probs)
    if chat is None or label is None:
        return None
    messages = chat["messages"]
    if messages[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in messages[:-1]):
        probs.add(key, "completion_not_last")
        return None
    record = {"prompt": messages[:-1], "completion": messages[-1:], "label": label}
    if "tools" in chat:
        record["tools"] = chat["tools"]
    return record
