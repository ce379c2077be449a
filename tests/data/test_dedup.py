"""Exact and near duplicates, the evaluation set's overlap with training, and the deduplicated copy.

Planted copies of the packaged sample's records (re-cased, re-spaced, punctuation changed, a word
replaced) are all found with their record numbers (from 1, in reading order, as every record number
of the validation report, and as lines); the sample's own 40 records have none (the false-positive count).
"""

from __future__ import annotations

import copy
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tuneforge
from tests.conftest import write
from tuneforge.data.dedup import (
    LSH_PERM,
    LSH_WEIGHTS,
    NUM_PERM,
    SCHEME,
    SEED,
    DuplicateFinder,
    Signatures,
    shingle_hashes,
    word_hashes,
)
from tuneforge.data.validate import validate_path

SAMPLE = Path(tuneforge.__file__).parent / "samples" / "alpaca_sample.json"


def _sample() -> list[dict]:
    return json.loads(SAMPLE.read_text())


def _replace_word(text: str, index: int, word: str) -> str:
    words = text.split(" ")
    words[index] = word
    return " ".join(words)


def planted() -> tuple[list[dict], dict[int, int], dict[int, int]]:
    """(records, exact copies, near copies): copies as {record number: the original's number}."""
    records = _sample()
    n = len(records)
    exact = [
        {**records[3], "instruction": "  " + records[3]["instruction"].upper()},  # re-cased, re-spaced
        copy.deepcopy(records[10]),
        {k: "\n".join(v.lower().split(" ")) for k, v in records[21].items()},  # lines for spaces
    ]
    near = [
        {**records[5], "output": records[5]["output"].replace(".", "!").replace(",", ";")},  # punctuation
        {k: v.upper().replace(".", "") for k, v in records[7].items()},  # re-cased and punctuation
        {**records[4], "output": _replace_word(records[4]["output"], 4, "check")},  # a word reworded
        {**records[0], "output": _replace_word(records[0]["output"], -1, "nightly.")},  # the last one
    ]
    assert all(a != b for a, b in zip(near, (records[5], records[7], records[4], records[0]), strict=True))
    records += exact + near
    return (
        records,
        {n + 1: 4, n + 2: 11, n + 3: 22},
        {n + 4: 6, n + 5: 8, n + 6: 5, n + 7: 1},
    )


def test_planted_duplicates_are_found_with_their_record_numbers(tmp_path):
    records, exact, near = planted()
    report = validate_path(write(tmp_path / "planted.json", records))
    dupes = report.to_dict()["duplicates"]
    assert dupes["records"] == len(records) and dupes["jaccard"] == 0.8
    assert {e["record"]: e["same_as"] for e in dupes["exact"]["examples"]} == exact
    assert dupes["exact"]["count"] == len(exact)
    found = {e["record"]: e["like"] for e in dupes["near"]["examples"][:4]}
    assert dupes["near"]["count"] == len(near) and found == dict(list(near.items())[:4])
    assert all(0.8 <= e["jaccard"] <= 1.0 for e in dupes["near"]["examples"])
    warnings = [str(w) for w in report.loaded.warnings]
    assert any("3 record(s) repeat an earlier one" in w and "41 = 4, 42 = 11, 43 = 22" in w for w in warnings)
    assert any("4 record(s) are near-duplicates" in w and "44 ~ 6" in w for w in warnings)
    # The threshold is the user's: at 0.95 the reworded copy of record 5 (Jaccard 0.88) is not one.
    strict = validate_path(tmp_path / "planted.json", jaccard=0.95).duplicates
    assert 46 not in {e["record"] for e in strict["near"]["examples"]} and strict["exact"]["count"] == 3


def test_no_false_positive_on_the_packaged_sample():
    dupes = validate_path(SAMPLE).duplicates
    assert (dupes["records"], dupes["exact"]["count"], dupes["near"]["count"]) == (40, 0, 0)
    # Even at a loose threshold the sample's unrelated answers are not near-duplicates.
    assert validate_path(SAMPLE, jaccard=0.3).duplicates["near"]["count"] == 0


def test_signatures_are_datasketchs_minhash_of_the_shingles():
    """The numpy batch computes what datasketch's own MinHash.update_batch holds for the same shingles."""
    from datasketch import MinHash

    texts = ["The quick brown fox jumps over the lazy dog.", "一个 测试", "ok", "A b c d e f g"]
    signatures = Signatures()
    for text in texts:
        signatures.add({"text": text})
    for i, text in enumerate(texts):
        words, _ = word_hashes(text.lower())
        shingles, _ = shingle_hashes(words, np.zeros(len(words), dtype=np.int64))
        expected = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME, hashfunc=lambda x: x)
        expected.update_batch([int(h) for h in shingles])
        assert (signatures.matrix[i] == expected.hashvalues).all(), text
    assert len(word_hashes("今天天气很好")[0]) == 6  # each CJK character is a word


def test_band_tables_are_datasketchs_lsh_buckets():
    """The numpy LSH tables give every row the candidates datasketch's MinHashLSH gives it (rows sharing a
    band's values), and the duplicate pairs its per-bucket walk gave."""
    from datasketch import LeanMinHash, MinHashLSH

    texts = [" ".join(r.values()) for r in planted()[0]]
    finder = DuplicateFinder()
    for text in texts * 2 + [text + " and more" for text in texts]:
        finder.add({"text": text})
    finder.report()
    sig, rows = finder.signatures.matrix[:, :LSH_PERM], finder.lsh.rows
    lsh = MinHashLSH(threshold=0.8, num_perm=LSH_PERM, weights=LSH_WEIGHTS)
    lean = {row: LeanMinHash(seed=SEED, hashvalues=sig[row], scheme=SCHEME) for row in rows.tolist()}
    for row, minhash in lean.items():
        lsh.insert(row, minhash, check_duplication=False)
    assert (finder.lsh.bands, finder.lsh.width) == (lsh.b, lsh.r)
    for row, minhash in lean.items():
        assert finder.lsh.query(sig[row]) == sorted(lsh.query(minhash)), row
    expected: set[tuple[int, int]] = set()
    for table in lsh.hashtables:
        for key in table.keys():
            members = sorted(table.get(key))
            for before, row in zip(members, members[1:], strict=False):
                expected |= {(row, members[0]), (row, before)}
    assert set(zip(*(a.tolist() for a in finder.lsh.neighbour_pairs()), strict=True)) == expected


def test_lsh_bands_are_datasketchs_choice_at_every_threshold():
    """The bands tuneforge computes without scipy are the (b, r) datasketch's MinHashLSH picks for the same
    threshold, values and weights, from 0.05 to 1.0 (the CLI's --jaccard range)."""
    from datasketch.lsh import _optimal_param

    from tuneforge.data.dedup import lsh_bands

    for jaccard in np.round(np.arange(0.05, 1.0001, 0.05), 2).tolist():
        assert lsh_bands(jaccard) == _optimal_param(jaccard, LSH_PERM, *LSH_WEIGHTS), jaccard


def test_a_duplicate_check_imports_neither_datasketch_nor_scipy():
    """Their imports (datasketch's package imports scipy) were 1.5 CPU-s of every `datasets validate` and of
    every job that checks its data: the check draws the same permutations and bands in numpy."""
    code = (
        "import sys\n"
        "from tuneforge.data.dedup import DuplicateFinder\n"
        "finder = DuplicateFinder()\n"
        "for text in ['one two three four five', 'one two three four five six', 'other words here']:\n"
        "    finder.add({'text': text})\n"
        "finder.report()\n"
        "assert finder.lsh is not None and finder.lsh.bands > 0\n"
        "print(sorted(m for m in ('datasketch', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_a_jaccard_of_one_finds_the_same_words(tmp_path):
    """1.0 is a threshold the CLI takes: the same words, punctuation and case aside (datasketch's LSH refused
    it: fewer than two bands)."""
    records, _, near = planted()
    dupes = validate_path(write(tmp_path / "planted.json", records), jaccard=1.0).duplicates
    assert [(e["record"], e["like"]) for e in dupes["near"]["examples"]] == list(near.items())[:2]


def test_eval_overlap_share_and_examples(tmp_path):
    sample = _sample()
    evaluation = [
        {k: v.upper() for k, v in sample[2].items()},  # exact once case is ignored
        {**sample[15], "output": sample[15]["output"].replace(".", " !")},  # near
        {"instruction": "Name the largest planet.", "input": "", "output": "Jupiter."},
        {"instruction": "Spell cat backwards.", "input": "", "output": "tac"},
    ]
    report = validate_path(SAMPLE, eval_path=write(tmp_path / "eval.json", evaluation))
    overlap = report.to_dict()["eval_overlap"]
    assert (overlap["eval_records"], overlap["overlapping"], overlap["share"]) == (4, 2, 0.5)
    assert overlap["exact"]["examples"] == [{"eval_record": 1, "train_record": 3}]
    assert [(e["eval_record"], e["train_record"]) for e in overlap["near"]["examples"]] == [(2, 16)]
    assert any("2 of 4 evaluation record(s) (50.0%)" in str(w) for w in report.loaded.warnings)


def test_store_records_duplicates_and_dedup_writes_a_clean_copy(tmp_path, monkeypatch):
    from tuneforge.data import dedup_copy
    from tuneforge.data.store import datasets_root, read_stored_records, store_path

    records, exact, near = planted()
    meta, _ = store_path(write(tmp_path / "planted.json", records), "planted")
    assert (meta["duplicates"]["exact"]["count"], meta["duplicates"]["near"]["count"]) == (3, 4)
    assert any("near-duplicates" in w["message"] for w in meta["warnings"])
    before = sorted(p.name for p in datasets_root().iterdir())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dedup_copy, "store_path", broken)
    with pytest.raises(OSError):
        dedup_copy.deduplicated_copy("planted", "clean")
    assert sorted(p.name for p in datasets_root().iterdir()) == before  # nothing half-written
    monkeypatch.undo()

    clean, report, _ = dedup_copy.deduplicated_copy("planted", "clean")
    assert (clean["name"], clean["records"], clean["format"]) == ("clean", 40, "openai")
    assert report["exact"]["count"] + report["near"]["count"] == 7 and meta["id"] in clean["source"]
    stored = read_stored_records(datasets_root() / meta["id"])
    assert read_stored_records(datasets_root() / clean["id"]) == stored[:40]
    assert clean["duplicates"]["exact"]["count"] == clean["duplicates"]["near"]["count"] == 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_hostile_inputs_take_bounded_time():
    """A 1 MB record of one word, and 100,000 tiny records: CPU time (not wall, the machine is shared)."""
    start = _cpu()
    huge = {"text": "word " * 200_000}
    finder = DuplicateFinder()
    for record in (huge, {"text": "other words entirely"}, huge):
        finder.add(record)
    report = finder.report()
    assert report["exact"]["examples"] == [{"record": 3, "same_as": 1}] and report["near"]["count"] == 0
    finder = DuplicateFinder()
    for i in range(100_000):
        finder.add({"text": f"r{i % 90_000}"})  # every record past 90,000 repeats one
    report = finder.report()
    assert (report["records"], report["exact"]["count"], report["near"]["count"]) == (100_000, 10_000, 0)
    assert _cpu() - start < 30
