"""Peak memory of `tuneforge datasets validate` on large inputs under the default size limit (2 GiB).

Each case is written to a temporary folder (generated, streamed: the script itself stays small), then
validated by a fresh `tuneforge` process; the script prints its wall time, peak resident memory
(ru_maxrss) and how it ended. The target is under 600 MB whatever the input.

    python bench/bench_memory.py [--cases zip_1.9g,json_1g,...] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

GiB = 2**30
RECORD = {
    "instruction": "Explain what this function does.",
    "input": "",
    "output": "It returns the value. " * 40,
}


def _line(i: int) -> bytes:
    return (json.dumps({**RECORD, "input": str(i)}) + "\n").encode()


def zip_1_9g(folder: Path) -> Path:
    """The issue's case: a small zip holding a 1.9 GiB JSONL entry (records repeat, so it compresses)."""
    block = b"".join(_line(i % 1000) for i in range(1000))
    times = int(1.9 * GiB) // len(block)
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    crc, size = 0, 0
    path = folder / "bomb.zip"
    name = b"data.jsonl"
    with open(path, "wb") as fh:
        fh.write(b"\0" * (30 + len(name)))  # local header, written when the sizes are known
        for _ in range(times):
            fh.write(comp.compress(block))
            crc, size = zlib.crc32(block, crc), size + len(block)
        fh.write(comp.flush())
        csize = fh.tell() - 30 - len(name)
        import struct

        local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, csize, size, len(name), 0)
        central = struct.pack(
            "<4s6H3I5HII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, csize, size, len(name), 0, 0, 0, 0, 0, 0
        )
        start = fh.tell()
        fh.write(central + name)
        fh.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), start, 0))
        fh.seek(0)
        fh.write(local + name)
    return path


def json_1g(folder: Path) -> Path:
    """A 1 GiB JSON array of distinct records (1.0 M records of ~1 KB)."""
    path = folder / "big.json"
    with open(path, "wb") as fh:
        fh.write(b"[")
        i, written = 0, 1
        while written < GiB:
            line = (b"," if i else b"") + _line(i)[:-1]
            fh.write(line)
            written += len(line)
            i += 1
        fh.write(b"]")
    return path


def jsonl_records_limit(folder: Path) -> Path:
    """1.9 GiB of short records: more than the 2 M records allowed, stopped by that limit."""
    path = folder / "many.jsonl"
    with open(path, "wb") as fh:
        written, i = 0, 0
        while written < int(1.9 * GiB):
            line = json.dumps({"instruction": f"q{i}", "output": "a" * 700}).encode() + b"\n"
            fh.write(line)
            written += len(line)
            i += 1
    return path


def csv_1g(folder: Path) -> Path:
    path = folder / "big.csv"
    with open(path, "w") as fh:
        fh.write("instruction,output\n")
        i, written = 0, 0
        text = RECORD["output"]
        while written < GiB:
            row = f'"q{i}","{text}"\n'
            fh.write(row)
            written += len(row)
            i += 1
    return path


def parquet_1g(folder: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "big.parquet"
    rows = 100_000
    schema = pa.schema([("instruction", pa.string()), ("output", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for part in range(GiB // (rows * 1000)):
            writer.write_table(
                pa.table(
                    {
                        "instruction": [f"q{part}-{i}" for i in range(rows)],
                        "output": [RECORD["output"] + str(i) for i in range(rows)] * 1,
                    },
                    schema=schema,
                )
            )
    return path


def long_records(folder: Path) -> Path:
    """40 records of 8 MiB each (the longest a record may be), 320 MiB."""
    path = folder / "long.jsonl"
    text = ("All work and no play makes Jack a dull boy. " * 200_000)[: 8 * 2**20 - 200]
    with open(path, "w") as fh:
        for i in range(40):
            fh.write(json.dumps({"instruction": f"Repeat {i}.", "output": text}) + "\n")
    return path


CASES = {f.__name__: f for f in (zip_1_9g, json_1g, jsonl_records_limit, csv_1g, parquet_1g, long_records)}


def run(path: Path, model: str | None) -> tuple[float, float, int, dict]:
    exe = Path(sys.executable).parent / "tuneforge"
    cmd = [str(exe), "datasets", "validate", str(path), "--json"] + (["--model", model] if model else [])
    env = dict(os.environ)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryDirectory() as home:
        if not model:
            env["TUNEFORGE_HOME"] = home
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        try:
            report = json.loads(out.read())
        except ValueError:
            report = {}
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), report


def make(name: str, folder: Path) -> Path:
    """Write a case's input in a separate process: a child's ru_maxrss starts from its parent's peak
    (fork/vfork share the parent's memory until exec), so this process must stay small."""
    out = subprocess.run(
        [sys.executable, __file__, "--make", name, str(folder)], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--model", default=None)
    ap.add_argument("--dir", default=None, help="where to write the inputs (default: a temporary folder)")
    ap.add_argument("--make", nargs=2, metavar=("CASE", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:
        print(CASES[args.make[0]](Path(args.make[1])))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for name in args.cases.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            path = make(name, folder)
            size = path.stat().st_size
            wall, peak, code, report = run(path, args.model)
            first = (report.get("errors") or [{}])[0].get("message", "")[:90]
            print(
                f"memory case={name} file_mb={size / 2**20:.0f} exit={code} records={report.get('records')} "
                f"wall_s={wall:.1f} peak_rss_mb={peak:.0f} first_error={first!r}",
                flush=True,
            )
            path.unlink()


if __name__ == "__main__":
    main()
