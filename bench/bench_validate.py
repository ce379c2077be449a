"""Time and peak memory of `tuneforge datasets validate` on a 52,000-record alpaca file.

The records are the data benchmark's (bench_data.docstring_records), cycled to 52,000 with a number in
each instruction so that none is a duplicate. Each run is a fresh `tuneforge` process; the script prints
the median of N runs (default 3) of wall time and peak resident memory (ru_maxrss of the child).

    python bench/bench_validate.py [--runs 3] [--model smollm2-135m-instruct] [--format json|jsonl]

Without --model the statistics count characters (no tokenizer, TUNEFORGE_HOME set to an empty folder
so that no pulled default model is used): that times reading and checking alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_data import docstring_records  # noqa: E402

N_RECORDS = 52_000


def write_dataset_in_child(folder: Path, fmt: str) -> Path:
    """Write the records in a separate process: a child's ru_maxrss starts from its parent's peak
    (fork/vfork share the parent's memory until exec), so this process must stay small."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_validate; "
        f"print(bench_validate.write_dataset(bench_validate.Path({str(folder)!r}), {fmt!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def write_dataset(folder: Path, fmt: str) -> Path:
    base = docstring_records()
    records = [
        {**r, "instruction": f"{r['instruction']} ({i})"}
        for i, r in ((i, base[i % len(base)]) for i in range(N_RECORDS))
    ]
    path = folder / f"alpaca52k.{fmt}"
    with open(path, "w", encoding="utf-8") as fh:
        if fmt == "json":
            json.dump(records, fh, ensure_ascii=False)
        else:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


def run_once(path: Path, model: str | None) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one `tuneforge datasets validate --json` process."""
    exe = Path(sys.executable).parent / "tuneforge"
    cmd = [str(exe), "datasets", "validate", str(path), "--json"]
    if model:
        cmd += ["--model", model]
    env = dict(os.environ)
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as home,
    ):
        if not model:
            env["TUNEFORGE_HOME"] = home
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 2):
            raise SystemExit(f"validate failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        report = json.loads(out.read())
    assert report["records"] == N_RECORDS, report["records"]
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--format", default="json", choices=["json", "jsonl"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset_in_child(Path(tmp), args.format)
        size_mb = path.stat().st_size / 2**20
        walls, peaks = [], []
        for _ in range(args.runs):
            wall, peak = run_once(path, args.model)
            walls.append(wall)
            peaks.append(peak)
        print(
            f"validate_52k format={args.format} size_mb={size_mb:.1f} model={args.model or 'none'} "
            f"runs={args.runs} wall_s_median={statistics.median(walls):.2f} "
            f"wall_s={[round(w, 2) for w in walls]} peak_rss_mib_median={statistics.median(peaks):.0f}"
        )


if __name__ == "__main__":
    main()
