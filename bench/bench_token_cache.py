"""How long a training job takes to tokenize its records: record by record (the path before batching),
in batches (a first job), and from the tokenized cache (a second job on the same data).

    python bench/bench_token_cache.py [--records 52000] [--model smollm2-135m-instruct] [--runs 3]

The records are bench_validate's alpaca set. Each run times the three alternately in this process (the
cache in a fresh TUNEFORGE_HOME each run) and checks that all three give the same examples.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_validate import N_RECORDS, write_dataset  # noqa: E402
from dedup_check import cpu_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=N_RECORDS)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from tuneforge.data.load import load_records
    from tuneforge.data.templates import resolve_chat_template
    from tuneforge.data.tokenize import tokenize_chat
    from tuneforge.models.load import load_tokenizer
    from tuneforge.settings import get_settings
    from tuneforge.spec import parse_spec
    from tuneforge.train.data import tokenize_records

    print(f"cpu={cpu_model()!r} cores={os.cpu_count()} load={os.getloadavg()}")
    tokenizer = load_tokenizer(args.model)
    template = resolve_chat_template(tokenizer, "auto")
    names = ["one_by_one", "batched_first_job", "cached_second_job"]
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}  # process time: says more on a loaded machine
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset(Path(tmp), "json", args.records)
        records = load_records(path).records
        spec = parse_spec({"model": args.model, "data": {"train": [{"path": str(path)}], "max_len": 1024}})
        for run in range(args.runs):
            home = Path(tmp) / f"home{run}"
            get_settings.cache_clear()
            os.environ["TUNEFORGE_HOME"] = str(home)
            runs = {
                "one_by_one": lambda: [
                    tokenize_chat(tokenizer, template, r["messages"], 1024) for r in records
                ],
                "batched_first_job": lambda: tokenize_records(records, tokenizer, template, spec),
                "cached_second_job": lambda: tokenize_records(records, tokenizer, template, spec),
            }
            out = {}
            for name, fn in runs.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                out[name] = fn()
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
            old, first, second = out.values()
            kept = [{"input_ids": t.input_ids, "labels": t.labels} for t in old if t.trained]
            assert first.examples == kept and second.examples == kept
    base, base_cpu = statistics.median(times["one_by_one"]), statistics.median(cpu["one_by_one"])
    for name, values in times.items():
        median, median_cpu = statistics.median(values), statistics.median(cpu[name])
        print(
            f"tokenize_{name} records={args.records} s_median={median:.2f} s={[round(v, 2) for v in values]} "
            f"cpu_s_median={median_cpu:.2f} speedup_vs_one_by_one={base / median:.1f} "
            f"cpu_ratio={base_cpu / median_cpu:.1f}"
        )
    print(f"load_after={os.getloadavg()}")


if __name__ == "__main__":
    main()
