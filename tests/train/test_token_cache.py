"""A second job on the same data takes its tokenized examples from the cache; anything that changes the
tokens misses it; a killed write leaves no entry; the folder stays under its bound."""

from __future__ import annotations

import os

from tests.conftest import MEMO, build_tokenizer
from tests.support.trainhelp import tiny_spec
from tuneforge.data.templates import CHAT_TEMPLATES
from tuneforge.spec import parse_spec
from tuneforge.train import data as train_data
from tuneforge.train import token_cache

RECORDS = [
    {
        "messages": [
            {"role": "user", "content": r["instruction"] + r["input"]},
            {"role": "assistant", "content": r["output"]},
        ]
    }
    for r in MEMO
]


def _spec(tmp_path, **over):
    return parse_spec(tiny_spec(tmp_path / "model", tmp_path / "data.json", **over))


def _entries() -> list[str]:
    folder = token_cache.cache_folder()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _calls(monkeypatch) -> list[int]:
    """Counts the tokenizer's runs over records (each call of the batch tokenizer)."""
    calls = []
    real = train_data.tokenize_many

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_data, "tokenize_many", counted)
    return calls


def test_second_load_hits_and_changes_miss(tiny_tokenizer, tmp_path, monkeypatch):
    calls = _calls(monkeypatch)
    spec, chatml = _spec(tmp_path), CHAT_TEMPLATES["chatml"]
    first = train_data.tokenize_records(RECORDS, tiny_tokenizer, chatml, spec)
    assert len(calls) == 1 and len(_entries()) == 1
    second = train_data.tokenize_records(RECORDS, tiny_tokenizer, chatml, spec)
    assert len(calls) == 1  # the tokenizer was not run again
    assert second.examples == first.examples and second.examples
    assert (second.truncated, second.dropped) == (first.truncated, first.dropped)

    other_tokenizer = build_tokenizer()
    other_tokenizer.add_tokens(["<extra>"])
    changes = [
        (RECORDS, tiny_tokenizer, CHAT_TEMPLATES["plain"], spec),
        (RECORDS, tiny_tokenizer, chatml, _spec(tmp_path, data__max_len=8)),
        (RECORDS, tiny_tokenizer, chatml, _spec(tmp_path, data__mask="all")),
        (RECORDS, other_tokenizer, chatml, spec),
        (RECORDS[:2], tiny_tokenizer, chatml, spec),
    ]
    for n, args in enumerate(changes, start=2):
        train_data.tokenize_records(*args)
        assert len(calls) == n, n - 2
    assert len(_entries()) == 1 + len(changes)


def test_a_killed_write_leaves_no_entry_and_a_damaged_entry_misses(tiny_tokenizer, tmp_path, monkeypatch):
    import numpy as np

    spec, chatml = _spec(tmp_path), CHAT_TEMPLATES["chatml"]

    def killed(fh, **arrays):
        fh.write(b"PK half")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", killed)
    train_data.tokenize_records(RECORDS, tiny_tokenizer, chatml, spec)  # the job goes on
    assert _entries() == []
    monkeypatch.undo()

    calls = _calls(monkeypatch)
    train_data.tokenize_records(RECORDS, tiny_tokenizer, chatml, spec)
    (entry,) = _entries()
    (token_cache.cache_folder() / entry).write_bytes(b"not a zip")
    again = train_data.tokenize_records(RECORDS, tiny_tokenizer, chatml, spec)
    assert len(calls) == 2 and again.examples


def test_least_recently_used_entries_go_past_the_bound(tmp_path):
    folder = tmp_path / "tokenized"
    folder.mkdir()
    for i, name in enumerate(["a.npz", "b.npz", "c.npz", f"{token_cache.TMP_PREFIX}1-x.npz"]):
        (folder / name).write_bytes(b"x" * 100)
        os.utime(folder / name, (1000 + i, 1000 + i))
    os.utime(folder / "a.npz")  # used just now
    token_cache.prune(folder, max_bytes=200)
    assert sorted(p.name for p in folder.iterdir()) == ["a.npz", "c.npz"]  # b: least recently used
