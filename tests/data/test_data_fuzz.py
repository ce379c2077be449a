"""Property-based fuzzing of dataset ingestion through the real CLI (contained child processes).

Whatever the records, the bytes, the container or the options: exit 0 or 2, no traceback, a few seconds,
bounded memory, nothing written, and with --json exactly one JSON report whose "valid" matches the exit
code. The default profile is small and deterministic (CI); for a long hunt:

    TUNEFORGE_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/data/test_data_fuzz.py
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.fuzzhelp import check_contained, snapshot

LONG = int(os.environ.get("TUNEFORGE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=LONG or 12,
    derandomize=not LONG,  # CI runs the same examples every time; a long hunt explores
    deadline=None,  # each example is a child process; its time is asserted by check_contained
    database=None,  # no .hypothesis folder in the working tree
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
MAX_SECONDS = 15

# ----------------------------------------------------------------------------------------- strategies

leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["[/]", "[bold]", "\u2028", "\ud800", "\x00", "user", "assistant", "text"])
)
value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
text = st.text(max_size=30) | value
role = st.sampled_from(["user", "assistant", "system", "tool", "human", "gpt", "developer", "[/]"]) | value
turn = st.fixed_dictionaries(
    {
        "role": role,
        "content": text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text})),
    },
    optional={"tool_calls": value, "tool_call_id": value, "name": value},
)
share_turn = st.fixed_dictionaries({"from": role, "value": text})
record = st.one_of(
    st.fixed_dictionaries(
        {"instruction": text, "output": text},
        optional={
            "input": text,
            "system": text,
            "history": value | st.lists(st.lists(text, min_size=2, max_size=2)),
        },
    ),
    st.fixed_dictionaries({"messages": st.lists(turn, max_size=4) | value}, optional={"tools": value}),
    st.fixed_dictionaries({"conversations": st.lists(share_turn, max_size=4) | value}),
    st.fixed_dictionaries({"prompt": text | st.lists(turn, max_size=2), "chosen": text, "rejected": text}),
    st.fixed_dictionaries({"prompt": text, "completion": text}),
    st.fixed_dictionaries({"text": text}),
    st.dictionaries(st.text(max_size=8), value, max_size=4),
    value,
)
records = st.lists(record, max_size=6)


def encode(rows: list, suffix: str, ascii_only: bool) -> bytes:
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows).encode(
            "utf-8", "surrogatepass"
        )
    if suffix == ".json":
        return json.dumps(rows, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    # CSV: every value as the text a spreadsheet would hold
    dicts = [r for r in rows if isinstance(r, dict)]
    columns = list(dict.fromkeys(k for r in dicts for k in r))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for r in dicts:
        writer.writerow(
            [r.get(c, "") if isinstance(r.get(c), str) else json.dumps(r.get(c)) for c in columns]
        )
    return buf.getvalue().encode("utf-8", "surrogatepass")


def place(folder: Path, name: str, data: bytes, container: str) -> str:
    """Put the file in the case folder as itself, inside a folder or inside a zip; the path to read."""
    if container == "zip":
        with zipfile.ZipFile(folder / "data.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"inner/{name}", data)
        return "data.zip"
    if container == "folder":
        (folder / "ds").mkdir()
        (folder / "ds" / name).write_bytes(data)
        return "ds"
    (folder / name).write_bytes(data)
    return name


def mutate(data: bytes, edits: list[tuple[float, int, str]]) -> bytes:
    out = bytearray(data)
    for at, byte, kind in edits:
        i = int(at * len(out))
        if kind == "flip" and i < len(out):
            out[i] = byte
        elif kind == "insert":
            out[i:i] = bytes([byte]) * (1 + byte % 7)
        elif kind == "delete":
            del out[i : i + 1 + byte % 5]
        elif kind == "truncate":
            del out[i:]
    return bytes(out)


edits = st.lists(
    st.tuples(
        st.floats(0, 1), st.integers(0, 255), st.sampled_from(["flip", "insert", "delete", "truncate"])
    ),
    max_size=4,
)


def run_and_check(cli_server, folder: Path, argv: list[str], env: dict | None = None):
    """(the JSON report, the run)."""
    before = snapshot(folder)
    run = cli_server.run(argv, folder, env)
    check_contained(run, before, snapshot(folder), MAX_SECONDS)
    report = json.loads(run.out)  # exactly one JSON object on stdout
    assert report["valid"] == (run.code == 0), run.text[-2000:]
    return report, run


def fresh(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -------------------------------------------------------------------------------------------- tests


@FUZZ
@given(
    rows=records,
    suffix=st.sampled_from([".jsonl", ".json", ".csv"]),
    container=st.sampled_from(["file", "file", "folder", "zip"]),
    ascii_only=st.booleans(),
)
@example(
    rows=[{"messages": [{"role": ["user"], "content": "x"}]}],
    suffix=".jsonl",
    container="file",
    ascii_only=True,
)
def test_any_records_in_any_format(cli_server, tmp_path_factory, rows, suffix, container, ascii_only):
    folder = fresh(tmp_path_factory)
    target = place(folder, "data" + suffix, encode(rows, suffix, ascii_only), container)
    report, _ = run_and_check(cli_server, folder, ["datasets", "validate", target, "--json"])
    assert report["records"] <= len(rows)


SEEDS = {
    ".jsonl": encode(
        [
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        ],
        ".jsonl",
        False,
    ),
    ".json": encode([{"prompt": "p", "chosen": "c", "rejected": "r"}] * 3, ".json", True),
    ".csv": b'instruction,output\n"multi\nline",x\n\xef\xbb\xbfy,z\n',
}


def _parquet_seed() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    table = pa.table(
        {
            "instruction": ["a", "b", "c"],
            "output": pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()), pa.array(["x", "y"])),
            "messages": [[{"role": "user", "content": "q"}]] * 3,
        }
    )
    pq.write_table(table, buf, row_group_size=2)
    return buf.getvalue()


@FUZZ
@given(
    suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]),
    container=st.sampled_from(["file", "zip"]),
    changes=edits,
)
def test_damaged_bytes(cli_server, tmp_path_factory, suffix, container, changes):
    folder = fresh(tmp_path_factory)
    seed = _parquet_seed() if suffix == ".parquet" else SEEDS[suffix]
    data = mutate(seed, changes)
    if container == "zip":  # damage the archive around the file instead
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("d" + suffix, seed)
        (folder / "data.zip").write_bytes(mutate(buf.getvalue(), changes))
        target = "data.zip"
    else:
        target = place(folder, "data" + suffix, data, "file")
    run_and_check(cli_server, folder, ["datasets", "validate", target, "--json"])


@FUZZ
@given(
    fmt=st.none() | st.text(max_size=12) | st.sampled_from(["alpaca", "openai", "text", "preference"]),
    mapping=st.none()
    | st.text(max_size=20)
    | st.sampled_from(["prompt=instruction,response=output", "a=[/]"]),
)
def test_any_format_and_map_option(cli_server, tmp_path_factory, fmt, mapping):
    folder = fresh(tmp_path_factory)
    (folder / "data.jsonl").write_bytes(SEEDS[".jsonl"])
    argv = ["datasets", "validate", "data.jsonl", "--json"]
    if fmt is not None and "\x00" not in fmt:
        argv += ["--format", fmt]
    if mapping is not None and "\x00" not in mapping:
        argv += ["--map", mapping]
    run_and_check(cli_server, folder, argv)


def test_large_valid_file_streams_in_bounded_memory(cli_server, tmp_path):
    """48 MB of valid records (held whole, as before the readers streamed, they took 411 MB)."""
    folder = tmp_path / "big"
    folder.mkdir()
    line = json.dumps({"instruction": "Explain the function.", "input": "", "output": "word " * 70})
    with open(folder / "big.jsonl", "w") as fh:
        for i in range(120_000):
            fh.write(line[:-1] + f', "n": {i}}}\n')
    report, run = run_and_check(cli_server, folder, ["datasets", "validate", "big.jsonl", "--json"])
    assert report["records"] == 120_000 and report["valid"]
    assert run.maxrss_mb < 200, f"peak memory {run.maxrss_mb:.0f} MB for a 48 MB file"
