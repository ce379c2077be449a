"""Time and peak memory of `tuneforge datasets validate` on a 52,000-record alpaca file.

The records are the data benchmark's (bench_data.docstring_records), cycled to 52,000 with a number in
each instruction so that none is a duplicate. Each run is a fresh `tuneforge` process; the script prints
the median of N runs (default 3) of wall time and peak resident memory (ru_maxrss of the child).

    python bench/bench_validate.py [--runs 3] [--model smollm2-135m-instruct] [--format json|jsonl]
        [--records 52000] [--baseline-src /tmp/old/src]

With --baseline-src (the ``src`` folder of another checkout, e.g. ``git archive main src | tar -x -C
/tmp/old``) each run times that code and this one alternately under the same load, and the script
prints the ratio of the medians (baseline / this: above 1 is faster here).

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
from dedup_check import cpu_model  # noqa: E402

N_RECORDS = 52_000


def write_dataset_in_child(folder: Path, fmt: str, n_records: int) -> Path:
    """Write the records in a separate process: a child's ru_maxrss starts from its parent's peak
    (fork/vfork share the parent's memory until exec), so this process must stay small."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_validate; "
        f"print(bench_validate.write_dataset(bench_validate.Path({str(folder)!r}), {fmt!r}, {n_records}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def write_dataset(folder: Path, fmt: str, n_records: int = N_RECORDS) -> Path:
    base = docstring_records()
    records = [
        {**r, "instruction": f"{r['instruction']} ({i})"}
        for i, r in ((i, base[i % len(base)]) for i in range(n_records))
    ]
    path = folder / f"alpaca{n_records}.{fmt}"
    with open(path, "w", encoding="utf-8") as fh:
        if fmt == "json":
            json.dump(records, fh, ensure_ascii=False)
        else:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


def run_once(path: Path, model: str | None, n_records: int, src: str | None = None):
    """(wall seconds, peak resident MiB, CPU seconds with its workers') of one `tuneforge datasets validate
    --json` process (CPU time says more than wall time on a loaded machine); ``src``: the
    source folder to import tuneforge from instead of the installed one."""
    cmd = [sys.executable, "-c", "from tuneforge.cli.main import main; main()"]
    cmd += ["datasets", "validate", str(path), "--json"]
    if model:
        cmd += ["--model", model]
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
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
    assert report["records"] == n_records, report["records"]
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--format", default="json", choices=["json", "jsonl"])
    ap.add_argument("--records", type=int, default=N_RECORDS)
    ap.add_argument("--baseline-src", default=None, help="src folder of the code to compare with")
    args = ap.parse_args()
    workers = os.environ.get("TUNEFORGE_VALIDATE_WORKERS") or "default (one per core, at most 4)"
    print(f"cpu={cpu_model()!r} cores={os.cpu_count()} validate_workers={workers} load={os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset_in_child(Path(tmp), args.format, args.records)
        size_mb = path.stat().st_size / 2**20
        sides = {"tuneforge": None, **({"baseline": args.baseline_src} if args.baseline_src else {})}
        walls: dict[str, list[float]] = {k: [] for k in sides}
        peaks: dict[str, list[float]] = {k: [] for k in sides}
        cpus: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.runs):
            for side, src in sides.items():  # alternating, so both see the same load
                wall, peak, cpu = run_once(path, args.model, args.records, src)
                walls[side].append(wall)
                peaks[side].append(peak)
                cpus[side].append(cpu)
        for side in sides:
            print(
                f"validate side={side} records={args.records} format={args.format} size_mb={size_mb:.1f} "
                f"model={args.model or 'none'} runs={args.runs} "
                f"wall_s_median={statistics.median(walls[side]):.2f} "
                f"wall_s={[round(w, 2) for w in walls[side]]} "
                f"cpu_s_median={statistics.median(cpus[side]):.1f} "
                f"peak_rss_mib_median={statistics.median(peaks[side]):.0f}"
            )
        if args.baseline_src:
            ratio = statistics.median(walls["baseline"]) / statistics.median(walls["tuneforge"])
            cpu_ratio = statistics.median(cpus["baseline"]) / statistics.median(cpus["tuneforge"])
            print(
                f"validate_speedup baseline/tuneforge={ratio:.2f} cpu_ratio={cpu_ratio:.2f} "
                f"load_after={os.getloadavg()}"
            )


if __name__ == "__main__":
    main()
