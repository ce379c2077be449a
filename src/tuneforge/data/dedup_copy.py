"""``tuneforge datasets dedup ID --into NEW``: a stored dataset's copy without its duplicates.

The stored canonical records are read twice (signatures, then the copy), so memory is the duplicate
check's, not the dataset's. The kept records are written as JSON Lines in the canonical shape of their
kind and stored by ``store_path`` like any upload: validated again, staged, renamed into place, so a
failure leaves no dataset and no temporary file behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tuneforge.jobs.staging import TMP, make_temp_dir

from .dedup import DuplicateFinder
from .store import datasets_root, find_dataset, store_path

# The format that reads a kind's canonical records back as they are (formats.py).
# Every kind FORMATS stores has one (tests/data/test_dedup_copy.py holds the two lists together).
CANONICAL_FORMAT = {
    "chat": "openai",
    "preference": "preference",
    "text": "text",
    "feedback": "kto",
    "prompt": "prompt",
}


def _stored_records(folder: Path):
    with open(folder / "records.jsonl", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _readable(kind: str, record: dict) -> dict:
    """A canonical record in the shape its kind's canonical format reads back: the kto format reads a
    conversation with a label, not the canonical prompt/completion message lists."""
    if kind != "feedback":
        return record
    tools = {"tools": record["tools"]} if "tools" in record else {}
    return {"messages": [*record["prompt"], *record["completion"]], "label": record["label"], **tools}


def deduplicated_copy(ref: str, into: str, jaccard: float | None = None) -> tuple[dict, dict, bool]:
    """(the copy's metadata, the duplicate report of ``ref`` that decided what was left out, whether the
    copy is new). Not new: the store already holds those very records (a dedup run twice, or a dataset
    without duplicates); its metadata is that dataset's, under its own name, not ``into``.

    Kept: the first record of each group of exact duplicates, and a record unless it is a
    near-duplicate of an earlier one."""
    folder = find_dataset(ref)
    meta = json.loads((folder / "dataset.json").read_text())
    finder = DuplicateFinder(jaccard)
    for record in _stored_records(folder):
        finder.add(record)
    report, keep = finder.report(), finder.keep()
    tmp = make_temp_dir(datasets_root(), TMP)
    try:
        path = tmp / f"{meta['id']}-dedup.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for kept, record in zip(keep, _stored_records(folder), strict=True):
                if kept:
                    fh.write(json.dumps(_readable(meta["kind"], record), ensure_ascii=False) + "\n")
        source = f"{meta['id']} without its duplicates (tuneforge datasets dedup, Jaccard {finder.jaccard})"
        copy, new = store_path(path, into, CANONICAL_FORMAT[meta["kind"]], source=source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return copy, report, new
