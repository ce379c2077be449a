"""The duplicate check runs in a thread beside the tokenizing workers, with the report it gave before."""

from __future__ import annotations

import json
import threading

import pytest

from tuneforge.data.templates import CHAT_TEMPLATES

CHATML = CHAT_TEMPLATES["chatml"]


def _dataset(tmp_path):
    rows = [
        {"instruction": f"Question {i}: " + "why " * (i % 7), "output": f"Answer {i}."} for i in range(40)
    ]
    rows[30] = dict(rows[3])  # an exact duplicate: record 31 is record 4
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_duplicates_are_checked_while_the_workers_count(tiny_tokenizer, tmp_path, monkeypatch):
    import tuneforge.data.stats_pool as sp
    import tuneforge.data.validate as v
    from tuneforge.settings import get_settings

    path = _dataset(tmp_path)
    without_tokenizer = v.validate_path(path)
    events = []
    real = v.check_duplicates

    def check(*args):
        events.append(("duplicates", threading.current_thread() is threading.main_thread()))
        return real(*args)

    def loader():
        events.append(("tokenizer", True))
        return tiny_tokenizer, CHATML

    monkeypatch.setattr(v, "check_duplicates", check)
    monkeypatch.setattr(sp, "TOKENIZE_BATCH", 4)  # 10 chunks: the pool is used
    monkeypatch.setenv("TUNEFORGE_VALIDATE_WORKERS", "2")
    get_settings.cache_clear()
    report = v.validate_path(path, tokenizer_loader=loader)
    assert events == [("tokenizer", True), ("duplicates", False)]  # after the tokenizer, in a thread
    assert report.duplicates == without_tokenizer.duplicates
    assert report.duplicates["exact"]["examples"] == [{"record": 31, "same_as": 4}]
    assert [w.to_dict() for w in report.loaded.warnings] == [
        w.to_dict() for w in without_tokenizer.loaded.warnings
    ]
    assert report.stats["unit"] == "tokens" and report.stats["sequence"]["count"] == 40


def test_a_failing_duplicate_check_fails_the_validation(tiny_tokenizer, tmp_path, monkeypatch):
    import tuneforge.data.validate as v

    def broken(*args):
        raise MemoryError("no room for the LSH tables")

    monkeypatch.setattr(v, "check_duplicates", broken)
    with pytest.raises(MemoryError, match="LSH"):
        v.validate_path(_dataset(tmp_path), tokenizer_loader=lambda: (tiny_tokenizer, CHATML))
