"""Time and peak memory of the duplicate and leakage check on 52,000 alpaca-like records.

The records are made of random words drawn with a Zipf-like frequency (instructions of ~12 words,
an input one time in three, answers of 20 to 120 words), so that unrelated records share common
words as real ones do. Planted: 1% exact copies (re-cased, re-spaced), 1% near copies (a word
replaced, punctuation changed), and an eval set of 2,000 records of which 10% come from training.
Each check runs in a fresh process; the script prints the median of N runs (default 3) of wall time
and peak resident memory, the CPU model and the planted versus found counts.

    python bench/dedup_check.py [--runs 3] [--records 52000]

The baseline is datasketch's own path (``MinHash.update_batch`` per record, then the same LSH), timed
on the first ``--baseline`` records (default 5,000) and scaled linearly: the ratio is what the numpy
shingle hashing buys.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 20_000


def _words(rng: random.Random, n: int) -> str:
    # Zipf-like: word k drawn with weight 1/k (common words shared by unrelated records).
    return " ".join(f"w{int(VOCAB ** rng.random())}" for _ in range(n))


def _record(rng: random.Random) -> dict:
    return {
        "instruction": _words(rng, rng.randint(6, 18)).capitalize() + "?",
        "input": _words(rng, rng.randint(3, 15)) if rng.random() < 0.33 else "",
        "output": _words(rng, rng.randint(20, 120)) + ".",
    }


def make_records(n: int, seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """(train, eval, planted counts): n unrelated records plus 1% exact and 1% near copies."""
    rng = random.Random(seed)
    records = [_record(rng) for _ in range(n)]
    planted = {"exact": 0, "near": 0}
    for _ in range(n // 100):
        src = records[rng.randrange(len(records))]
        records.insert(rng.randrange(len(records)), {k: "  " + v.upper() for k, v in src.items()})
        planted["exact"] += 1
    for _ in range(n // 100):
        src = dict(records[rng.randrange(len(records))])
        out = src["output"].split()
        out[rng.randrange(len(out))] = "reworded"
        src["output"] = ", ".join(out) + "!"
        records.insert(rng.randrange(len(records)), src)
        planted["near"] += 1
    evaluation = [dict(rng.choice(records)) if i % 10 == 0 else _record(rng) for i in range(2000)]
    planted["eval_overlap"] = 200
    return records, evaluation, planted


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(path: Path, eval_path: Path) -> dict:
    """In this (fresh) process: read both files as the validator does, then check; time the check."""
    from tuneforge.data.dedup import DuplicateFinder, Signatures
    from tuneforge.data.load import load_records

    train = load_records(path).records
    evaluation = load_records(eval_path).records
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu_start = time.perf_counter(), _cpu()
    finder = DuplicateFinder()
    for r in train:
        finder.add(r)
    report = finder.report()
    signatures = Signatures()
    for r in evaluation:
        signatures.add(r)
    overlap = finder.overlap(signatures)
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "records_read_mb": before_mb,
        "exact": report["exact"]["count"],
        "near": report["near"]["count"],
        "eval_overlapping": overlap["overlapping"],
    }


def run_baseline(path: Path, n: int) -> dict:
    """datasketch's own hashing: MinHash.update_batch with its default sha1 hash, a record at a time."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    from tuneforge.data.dedup import LSH_PERM, NUM_PERM, SEED, normal_text
    from tuneforge.data.load import load_records

    train = load_records(path).records[:n]
    start, cpu_start = time.perf_counter(), _cpu()
    lsh = MinHashLSH(threshold=0.8, num_perm=LSH_PERM, weights=(0.05, 0.95))
    for i, r in enumerate(train):
        words = re.findall(r"\w+", normal_text(r))
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch([" ".join(words[k : k + 3]).encode() for k in range(max(1, len(words) - 2))])
        lean = LeanMinHash(seed=SEED, hashvalues=m.hashvalues[:LSH_PERM], scheme=m.scheme)
        lsh.query(lean)
        lsh.insert(i, lean)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": _cpu() - cpu_start, "records": n}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--records", type=int, default=52_000)
    ap.add_argument("--baseline", type=int, default=5_000)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-baseline", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), Path(args.child[1]))))
        return
    if args.child_baseline:
        print(json.dumps(run_baseline(Path(args.child_baseline[0]), int(args.child_baseline[1]))))
        return
    train, evaluation, planted = make_records(args.records * 98 // 100)
    with tempfile.TemporaryDirectory() as tmp:
        path, eval_path = Path(tmp) / "train.json", Path(tmp) / "eval.json"
        path.write_text(json.dumps(train))
        eval_path.write_text(json.dumps(evaluation))
        me = [sys.executable, __file__]
        runs, base = [], []
        for _ in range(args.runs):  # alternating, each in a fresh process
            out = subprocess.run([*me, "--child", str(path), str(eval_path)], capture_output=True, text=True)
            runs.append(
                json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else out.stderr
            )
            out = subprocess.run(
                [*me, "--child-baseline", str(path), str(args.baseline)], capture_output=True, text=True
            )
            base.append(
                json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else out.stderr
            )
    if any(isinstance(r, str) for r in runs + base):
        sys.exit("a run failed:\n" + "\n".join(r for r in runs + base if isinstance(r, str)))
    seconds = statistics.median(r["seconds"] for r in runs)
    per_record_base = statistics.median(b["seconds"] / b["records"] for b in base)
    scaled = per_record_base * len(train)
    print(f"cpu: {cpu_model()} ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    print(f"records: {len(train)} train, {len(evaluation)} eval; planted {planted}")
    found = runs[0]
    print(f"found: exact={found['exact']} near={found['near']} eval_overlapping={found['eval_overlapping']}")
    print(
        f"dedup_check_s tuneforge={seconds:.2f} baseline={scaled:.2f} (datasketch update_batch, "
        f"{args.baseline} records scaled) ratio={scaled / seconds:.1f}"
    )
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    cpu_base = statistics.median(b["cpu_seconds"] / b["records"] for b in base) * len(train)
    print(
        f"dedup_check_cpu_s tuneforge={cpu:.2f} baseline={cpu_base:.2f} ratio={cpu_base / cpu:.1f} "
        "(CPU time: about the wall time of an idle machine, the check being one thread)"
    )
    peak = statistics.median(r["peak_mb"] for r in runs)
    read = statistics.median(r["records_read_mb"] for r in runs)
    print(f"peak_rss_mb {peak:.0f} (of which {read:.0f} before the check: the records read and kept)")


if __name__ == "__main__":
    main()
