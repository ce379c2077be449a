"""LLaMA-Factory datasets (names in ``dataset_info.json``) as tuneforge dataset references.

A ``dataset_info.json`` entry names a file and how to read it: ``formatting`` alpaca or sharegpt,
``ranking`` for preference pairs, ``columns`` (which column holds the prompt, the response, the
conversation …) and, for sharegpt, ``tags`` (which keys and role names the turns use). tuneforge
reads the same files through its formats and a column map (``DatasetRef.format`` and ``.map``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.records import ROLE_ALIASES

MAX_INFO_BYTES = 8 << 20

# LLaMA-Factory's column defaults (its DatasetAttr) and the key tuneforge's format reads each from.
ALPACA_COLUMNS = {
    "prompt": ("instruction", "instruction"),
    "query": ("input", "input"),
    "response": ("output", "output"),
    "system": (None, "system"),
    "history": (None, "history"),
}
PREFERENCE_COLUMNS = {
    "prompt": ("instruction", "prompt"),
    "chosen": ("chosen", "chosen"),
    "rejected": ("rejected", "rejected"),
    "system": (None, "system"),
}
# stage: kto reads alpaca columns into the kto format's keys, and kto_tag (the good/bad label) as label.
KTO_COLUMNS = {
    **ALPACA_COLUMNS,
    "prompt": ("instruction", "prompt"),
    "response": ("output", "completion"),
    "kto_tag": (None, "label"),
}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
TAG_ROLES = {
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "assistant",
    "system_tag": "system",
}
UNSUPPORTED_COLUMNS = ("tools", "images", "videos", "audios", "kto_tag")


@dataclass
class DatasetProblems:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_dataset_info(dataset_dir: Path | None, problems: DatasetProblems) -> dict | None:
    if dataset_dir is None:
        return None
    path = dataset_dir / "dataset_info.json"
    if not path.is_file():
        problems.warnings.append(
            f"{path} does not exist; each dataset name is read as a file in {dataset_dir} or a stored "
            "tuneforge dataset."
        )
        return None
    if path.stat().st_size > MAX_INFO_BYTES:
        problems.errors.append(f"{path}: larger than {MAX_INFO_BYTES >> 20} MiB; not a dataset_info.json.")
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.errors.append(f"{path}: invalid JSON: {exc}")
        return None
    if not isinstance(info, dict):
        problems.errors.append(f"{path}: expected an object of dataset names.")
        return None
    return info


def dataset_ref(
    name: str, info: dict | None, dataset_dir: Path | None, stage: str, problems: DatasetProblems
) -> dict | None:
    """A JobSpec DatasetRef (as a dict) for one LLaMA-Factory dataset name."""
    if info is None or name not in info:
        if info is not None:
            problems.errors.append(
                f"dataset {name!r} is not in {dataset_dir}/dataset_info.json (it has "
                f"{', '.join(sorted(info)[:10]) or 'nothing'}). Add it there or fix --dataset."
            )
            return None
        path = dataset_dir / name if dataset_dir and (dataset_dir / name).exists() else None
        return {"path": str(path.resolve()) if path else name}
    entry = info[name]
    where = f"dataset_info.json[{name!r}]"
    if not isinstance(entry, dict):
        problems.errors.append(f"{where}: expected an object with file_name.")
        return None
    hub = next((k for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url") if entry.get(k)), None)
    if not entry.get("file_name"):
        problems.errors.append(
            f"{where}: {'only ' + hub + ' (a hub download)' if hub else 'no file_name'}; tuneforge reads "
            "local files. Download the data and give its file_name."
        )
        return None
    file = Path(str(entry["file_name"]))
    path = file if file.is_absolute() or dataset_dir is None else dataset_dir / file
    ref: dict = {"path": str(path.resolve()) if path.exists() else str(path)}
    if not path.exists():
        problems.warnings.append(f"{where}: {path} does not exist (yet).")
    columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        problems.errors.append(f"{where}: columns and tags must be objects.")
        return None
    for extra in UNSUPPORTED_COLUMNS:
        if columns.get(extra) and not (extra == "kto_tag" and stage == "kto"):
            problems.warnings.append(f"{where}: column {extra} ({columns[extra]}) is not used by tuneforge.")
    if entry.get("num_samples"):
        ref["max_samples"] = int(entry["num_samples"])
    formatting = entry.get("formatting", "alpaca")
    if stage == "pt":
        text_column = columns.get("prompt", "text")
        ref["format"] = "text"
        if text_column != "text":
            ref["map"] = {"text": text_column}
        return ref
    if formatting not in ("alpaca", "sharegpt"):
        problems.errors.append(f"{where}: formatting {formatting!r}; use alpaca or sharegpt.")
        return None
    ranking = bool(entry.get("ranking"))
    if formatting == "alpaca":
        table = PREFERENCE_COLUMNS if ranking else ALPACA_COLUMNS
        ref["format"] = "preference" if ranking else "alpaca"
        ref["map"] = _column_map(columns, table)
        if ranking and columns.get("query"):
            problems.warnings.append(
                f"{where}: query column {columns['query']!r} is not read for preference pairs; "
                "put it into the prompt column."
            )
    else:
        _sharegpt(ref, columns, tags, ranking, where, problems)
    if stage == "kto":
        _kto(ref, columns, formatting, where, problems)
    if not ref.get("map"):
        ref.pop("map", None)
    return ref


def _column_map(columns: dict, table: dict) -> dict[str, str]:
    """tuneforge key → the file's column, only where the file's column is not the key itself."""
    mapping = {}
    for lf_name, (lf_default, ours) in table.items():
        column = columns.get(lf_name, lf_default)
        if column and column != ours:
            mapping[ours] = column
    return mapping


def _sharegpt(ref: dict, columns: dict, tags: dict, ranking: bool, where: str, problems: DatasetProblems):
    tags = {**SHAREGPT_TAGS, **tags}
    keys = (tags["role_tag"], tags["content_tag"])
    if keys == ("from", "value"):
        conversation_key = "conversations"
    elif keys == ("role", "content"):
        conversation_key = "messages"
    else:
        problems.errors.append(
            f"{where}: turns keyed {keys[0]}/{keys[1]}; tuneforge reads sharegpt turns as from/value or "
            "role/content. Rename the keys in the file."
        )
        return
    for tag, role in TAG_ROLES.items():
        if ROLE_ALIASES.get(tags[tag]) != role:
            problems.errors.append(
                f"{where}: {tag} {tags[tag]!r} is not a role name tuneforge reads as {role} "
                f"({', '.join(k for k, v in ROLE_ALIASES.items() if v == role)})."
            )
    column = columns.get("messages", "conversations")
    if ranking:
        # Preference pairs: the conversation so far is the prompt, chosen/rejected one turn each.
        ref["format"] = "preference"
        mapping = {"prompt": column}
        mapping.update({k: columns[k] for k in ("chosen", "rejected") if columns.get(k, k) != k})
    else:
        ref["format"] = "sharegpt" if conversation_key == "conversations" else "openai"
        mapping = {conversation_key: column} if column != conversation_key else {}
    if columns.get("system"):
        mapping["system"] = columns["system"]
    ref["map"] = {k: v for k, v in mapping.items() if k != v}


def _kto(ref: dict, columns: dict, formatting: str, where: str, problems: DatasetProblems) -> None:
    """stage: kto: the record's answer (alpaca output, or the conversation's last turn) is the completion,
    labelled good or bad by the kto_tag column."""
    if not columns.get("kto_tag"):
        problems.errors.append(
            f"{where}: stage kto needs the kto_tag column (each record's true/false label); add "
            '"kto_tag": "COLUMN" to its columns.'
        )
        return
    ref["format"] = "kto"
    if formatting == "alpaca":
        ref["map"] = _column_map(columns, KTO_COLUMNS)
    elif columns["kto_tag"] != "label":
        ref["map"] = {**ref.get("map", {}), "label": columns["kto_tag"]}
