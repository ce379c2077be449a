"""Hand-built hostile dataset files, one builder per class of failure the fuzzing run found.

Each ``Case`` builds its files in an empty folder and returns the `tuneforge` arguments that read them,
with the exit code and a piece of output that shows the failure was caught for the right reason.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

GOOD = {"instruction": "Say hi.", "input": "", "output": "hi"}


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]
    code: int  # the exit code it must end with
    expect: str = ""  # must appear in stdout or stderr
    env: dict = field(default_factory=dict)
    seconds: float = 15  # on a loaded 2-core machine; most cases take well under a second


def validate(*args) -> list[str]:
    return ["datasets", "validate", *map(str, args), "--json"]


def lines(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def put(folder: Path, name: str, content) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def one(name: str, content, *extra) -> Callable[[Path], list[str]]:
    return lambda d: validate(put(d, name, content).name, *extra)


def human(name: str, content) -> Callable[[Path], list[str]]:
    """The human-readable report (Rich), where markup in user strings could break the output."""
    return lambda d: ["datasets", "validate", put(d, name, content).name]


# ---------------------------------------------------------------------------------------------- zip


def zip_bytes(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def patch_zip(
    raw: bytes,
    *,
    flags: int = 0,
    method: int | None = None,
    name: bytes | None = None,
    local_only: bool = False,
) -> bytes:
    """Rewrite the first entry's flag bits, compression method or name in both of its headers (or in
    its local header only, so that the two disagree)."""
    out = bytearray(raw)
    local = out.find(b"PK\x03\x04")
    central = out.find(b"PK\x01\x02")
    headers = ((local, 6, 8, 26, 30), (central, 8, 10, 28, 46))
    for start, flag_at, method_at, name_len_at, name_at in headers[:1] if local_only else headers:
        out[start + flag_at : start + flag_at + 2] = struct.pack(
            "<H", struct.unpack("<H", out[start + flag_at : start + flag_at + 2])[0] | flags
        )
        if method is not None:
            out[start + method_at : start + method_at + 2] = struct.pack("<H", method)
        if name is not None:
            n = struct.unpack("<H", out[start + name_len_at : start + name_len_at + 2])[0]
            assert len(name) == n
            out[start + name_at : start + name_at + n] = name
    return bytes(out)


def damaged(raw: bytes, at: float = 0.5) -> bytes:
    """Flip bytes inside the first entry's data."""
    out = bytearray(raw)
    start = out.find(b"PK\x03\x04")
    n, e = struct.unpack("<HH", out[start + 26 : start + 30])
    size = struct.unpack("<I", out[start + 18 : start + 22])[0]
    data = start + 30 + n + e
    for i in range(int(size * at), min(size, int(size * at) + 8)):
        out[data + i] ^= 0x5A
    return bytes(out)


def deflate_stream(block: bytes, times: int) -> tuple[bytes, int, int]:
    """(raw deflate data, crc, size) of ``block`` repeated, compressed without holding it whole."""
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    parts, crc = [], 0
    for _ in range(times):
        parts.append(comp.compress(block))
        crc = zlib.crc32(block, crc)
    parts.append(comp.flush())
    return b"".join(parts), crc, len(block) * times


def bomb_zip(name: str, block: bytes, times: int) -> bytes:
    """A zip whose one entry unpacks to len(block) * times bytes (written by hand: zipfile would hold
    the whole entry in memory to write it)."""
    data, crc, size = deflate_stream(block, times)
    fname = name.encode()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size, len(fname), 0)
    central = struct.pack(
        "<4s6H3I5HII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data), size, len(fname), 0, 0, 0, 0, 0, 0
    )
    body = local + fname + data
    directory = central + fname
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end


# ------------------------------------------------------------------------------------------ parquet


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def parquet_case(name: str, make_table, **write) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        import pyarrow.parquet as pq

        pq.write_table(make_table(), d / name, **write)
        return validate(name)

    return build


def _timestamps():
    import pyarrow as pa

    return pa.table(
        {
            "instruction": ["a", "b"],
            "output": ["x", "y"],
            "when": pa.array([2**62, 0], type=pa.timestamp("us")),
            "day": pa.array([2**31 - 1, 0], type=pa.date32()),
        }
    )


def _nested_timestamps():
    import pyarrow as pa

    when = pa.array([{"t": 2**62}, {"t": 0}], type=pa.struct([("t", pa.timestamp("us"))]))
    return pa.table({"instruction": ["a", "b"], "output": ["x", "y"], "meta": when})


def _role_lists():
    import pyarrow as pa

    messages = [[{"role": ["user"], "content": "hi"}, {"role": ["assistant"], "content": "yo"}]]
    return pa.table({"messages": pa.array(messages)})


def _refused_wide(rows: int = 20000):
    import pyarrow as pa

    return pa.table({f"c{i}": [f"v{j}" for j in range(rows)] for i in range(8)})


def _dictionary_bomb(value_mib: int = 1, rows: int = 2300):
    """rows × value_mib MiB once decoded, from a file of a few KB: one dictionary entry, repeated."""
    import pyarrow as pa

    big = pa.DictionaryArray.from_arrays(
        pa.array([0] * rows, pa.int32()), pa.array(["x" * (value_mib * 2**20)])
    )
    return pa.table({"instruction": pa.array(["a"] * rows), "output": big})


def _nested_dictionary_bomb(value_mib: int = 1, rows: int = 2300):
    """The dictionary bomb inside a messages column (list<struct<role, content>>): pyarrow decoded it
    while batching, before anything was counted (2 GB for a 10 KB file)."""
    import pyarrow as pa

    content = pa.DictionaryArray.from_arrays(
        pa.array([0] * (2 * rows), pa.int32()), pa.array(["x" * (value_mib * 2**20)])
    )
    role = pa.array(["user", "assistant"] * rows)
    turns = pa.StructArray.from_arrays([role, content], names=["role", "content"])
    return pa.table(
        {"messages": pa.ListArray.from_arrays(pa.array(range(0, 2 * rows + 1, 2), pa.int32()), turns)}
    )


def _page_bomb(columns: int = 3, page_mib: int = 120):
    """A ~15 KB file whose first page in each column decompresses to ``page_mib`` MiB (zstd of one
    repeated byte): Arrow would decode every column's page before the first 64 rows could be counted."""
    import pyarrow as pa

    text = pa.array(["x" * 2**20] * page_mib)
    return pa.table({f"c{i}": text for i in range(columns)})


def _damaged_page_header(d: Path) -> list[str]:
    import pyarrow as pa

    data = bytearray(parquet_bytes(pa.table({"instruction": ["a"] * 50, "output": ["b"] * 50})))
    data[4:24] = b"\xff" * 20  # the first page header, right after the leading magic
    return one("h.parquet", bytes(data))(d)


class _Thrift:
    """Thrift compact structs as ``[field id, type, value]`` lists: enough to rewrite a Parquet footer."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def value(self, kind: int):
        if kind in (1, 2):
            return kind == 1
        if kind == 3:
            return self.byte()
        if kind in (4, 5, 6):
            v = self.varint()
            return (v >> 1) ^ -(v & 1)
        if kind in (7, 8):
            n = 8 if kind == 7 else self.varint()
            self.pos += n
            return self.data[self.pos - n : self.pos]
        if kind in (9, 10):
            head = self.byte()
            n, elem = head >> 4, head & 0x0F
            n = self.varint() if n == 15 else n
            return elem, [self.value(3 if elem in (1, 2) else elem) for _ in range(n)]
        assert kind == 12, kind
        fields, last = [], 0
        while head := self.byte():
            last = last + (head >> 4) if head >> 4 else self.value(4)
            fields.append([last, head & 0x0F, self.value(head & 0x0F)])
        return fields


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _thrift(kind: int, value) -> bytes:
    if kind in (1, 2):
        return b""
    if kind == 3:
        return bytes([value])
    if kind in (4, 5, 6):
        return _varint((value << 1) ^ (value >> 63))
    if kind in (7, 8):
        return value if kind == 7 else _varint(len(value)) + value
    if kind in (9, 10):
        elem, items = value
        n = len(items)
        head = bytes([n << 4 | elem]) if n < 15 else bytes([0xF0 | elem]) + _varint(n)
        return head + b"".join(_thrift(3 if elem in (1, 2) else elem, x) for x in items)
    out, last = bytearray(), 0
    for fid, kind_, v in value:
        kind_ = (1 if v else 2) if kind_ in (1, 2) else kind_
        delta = fid - last
        out += bytes([delta << 4 | kind_]) if 0 < delta <= 15 else bytes([kind_]) + _thrift(4, fid)
        out += _thrift(kind_, v)
        last = fid
    return bytes(out) + b"\0"


def _refooter(data: bytes, edit) -> bytes:
    """``data`` with its footer (FileMetaData) rewritten by ``edit(fields)``."""
    n = struct.unpack("<i", data[-8:-4])[0]
    meta = _Thrift(data[-8 - n : -8]).value(12)
    edit(meta)
    footer = _thrift(12, meta)
    return data[: -8 - n] + footer + struct.pack("<i", len(footer)) + b"PAR1"


def _field(fields, fid):
    return next(f for f in fields if f[0] == fid)


def _small_parquet() -> bytes:
    import pyarrow as pa

    return parquet_bytes(pa.table({"instruction": ["q"] * 20, "output": ["a"] * 20}))


def _extra_column_chunk(d: Path) -> list[str]:
    """Row group 0 lists three column chunks for a two-column schema: pyarrow aborted the process."""

    def edit(meta):
        columns = _field(_field(meta, 4)[2][1][0], 1)[2][1]  # row_groups[0].columns
        columns.append(columns[0])

    return one("x.parquet", _refooter(_small_parquet(), edit))(d)


def _shared_chunks(d: Path) -> list[str]:
    """Three hundred row groups pointing at the same bytes, num_rows 1: the page walk was the slow part."""

    def edit(meta):
        groups = _field(meta, 4)[2][1]
        groups.extend([groups[0]] * 299)
        _field(meta, 3)[2] = 1

    return one("s.parquet", _refooter(_small_parquet(), edit))(d)


def _int96_byte_array(d: Path) -> list[str]:
    """A byte-array column declared INT96 in the schema: pyarrow's column metadata accessor threw an
    uncaught C++ exception and aborted the process (the server, on an upload)."""

    def edit(meta):
        _field(_field(meta, 2)[2][1][1], 1)[2] = 3  # schema[1].type = INT96

    return one("i.parquet", _refooter(_small_parquet(), edit))(d)


def _empty_row_group_between(d: Path) -> list[str]:
    """A real writer's file with an empty row group in the middle (its chunk offsets are 0): valid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"instruction": [f"q{i}" for i in range(30)], "output": ["a"] * 30})
    with pq.ParquetWriter(d / "rg.parquet", table.schema) as writer:
        for part in (table.slice(0, 10), table.slice(0, 0), table.slice(10, 20)):
            writer.write_table(part)
    return validate("rg.parquet")


def _bool_map_page_header(d: Path) -> list[str]:
    """A page header opening with a map of 2**63 bool pairs: each pair reads no byte, so it never ended."""
    import pyarrow.parquet as pq

    data = bytearray(_small_parquet())
    offset = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(0).data_page_offset
    data[offset : offset + 11] = bytes.fromhex("1bffffffffffffffff7f11")
    return one("m.parquet", bytes(data))(d)


# -------------------------------------------------------------------------------------- special files


def _fifo(d: Path) -> list[str]:
    os.mkfifo(d / "data.jsonl")
    return validate("data.jsonl")


def _fifo_in_folder(d: Path) -> list[str]:
    put(d, "ds/a.jsonl", lines(GOOD))
    os.mkfifo(d / "ds" / "b.jsonl")
    return validate("ds")


def _dev_zero_link(d: Path) -> list[str]:
    os.symlink("/dev/zero", d / "zero.jsonl")
    return validate("zero.jsonl")


def _link_leaving_folder(d: Path) -> list[str]:
    put(d, "secret.jsonl", lines(GOOD))
    put(d, "ds/a.jsonl", lines(GOOD))
    os.symlink(d / "secret.jsonl", d / "ds" / "b.jsonl")
    return validate("ds")


def _long_name(d: Path) -> list[str]:
    return validate("a" * 300 + ".jsonl")


def _symlink_member(d: Path) -> list[str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("data.jsonl")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    put(d, "link.zip", buf.getvalue())
    return validate("link.zip")


def _many_files(d: Path) -> list[str]:
    for i in range(30):
        put(d, f"ds/{i}.jsonl", lines(GOOD))
    return validate("ds")


def _zip_claiming_fewer(d: Path) -> list[str]:
    """A zip whose end record claims 5 entries while its directory holds 300: zipfile walks the
    directory by its size, so the claim must not be what is counted."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(300):
            zf.writestr(f"f{i}.jsonl", lines(GOOD))
    raw = bytearray(buf.getvalue())
    end = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", raw, end + 8, 5, 5)
    put(d, "claims5.zip", bytes(raw))
    return validate("claims5.zip")


def _wide_csv_zip(d: Path) -> list[str]:
    """A 2 MB zip of a CSV with a million columns (took over 60 s)."""
    header = ",".join(f"c{i}" for i in range(1_000_000))
    put(d, "wide.zip", zip_bytes({"wide.csv": (header + "\n" + "a," * 999_999 + "a\n").encode()}))
    return validate("wide.zip")


def _spaces_zip(d: Path) -> list[str]:
    """`[` + 200 MiB of spaces + one record + `]` in a 200 KB zip: the spaces between JSON values took
    a Python loop per character (1.5 GiB: 257 s)."""
    body = b"[" + b" " * 2**20 * 200 + json.dumps(GOOD).encode() + b"]"
    put(d, "spaces.zip", zip_bytes({"spaces.json": body}))
    return validate("spaces.zip")


def _shared_dictionary_string():
    """320 rows sharing one dictionary entry of 7.5 MiB: a 1 KB file; Arrow decoded 64 rows (480 MiB)
    at once before any was counted."""
    import pyarrow as pa

    big = pa.DictionaryArray.from_arrays(pa.array([0] * 320, pa.int32()), pa.array(["x" * (15 * 2**19)]))
    return pa.table({"instruction": big, "output": pa.array(["a"] * 320)})


def _timestamp_as_text():
    import pyarrow as pa

    return pa.table({"instruction": pa.array([0], type=pa.timestamp("ms")), "output": ["b"]})


def _template_case(template: str) -> Callable[[Path], list[str]]:
    """Validate with a tiny tokenizer and a hostile --template."""

    def build(d: Path) -> list[str]:
        from tests.conftest import build_tokenizer

        build_tokenizer().save_pretrained(d / "tok")
        put(d, "d.jsonl", lines(GOOD))
        return validate("d.jsonl", "--model", str(d / "tok"), "--template", template)

    return build


# -------------------------------------------------------------------------------------------- cases

DEEP = 990
# An otherwise valid record with an extra field nested 990 deep (as text: building it in Python recurses).
DEEP_RECORD = json.dumps(GOOD)[:-1] + ', "extra": ' + "[" * DEEP + "]" * DEEP + "}"

CASES = [
    # Python's own limits
    Case(
        "int_4301_digits",
        one("big.jsonl", lines(GOOD)[:-2] + ', "n": ' + "7" * 4301 + "}\n"),
        2,
        "TUNEFORGE_MAX_NUMBER_DIGITS",
    ),
    Case(
        "int_in_json_array",
        one("big.json", '[{"instruction": "a", "output": ' + "9" * 5000 + "}]"),
        2,
        "TUNEFORGE_MAX_NUMBER_DIGITS",
    ),
    Case("brackets_100k", one("deep.json", "[" * 100_000), 2, "TUNEFORGE_MAX_DEPTH"),
    Case("brackets_100k_jsonl", one("deep.jsonl", "[" * 100_000 + "\n"), 2, "TUNEFORGE_MAX_DEPTH"),
    Case("deep_extra_field", one("deep.jsonl", lines(GOOD) + DEEP_RECORD + "\n"), 2, "TUNEFORGE_MAX_DEPTH"),
    Case(
        "deep_extra_field_json",
        one("deep.json", f"[{json.dumps(GOOD)}, {DEEP_RECORD}]"),
        2,
        "TUNEFORGE_MAX_DEPTH",
    ),
    # wrong types in structural fields
    Case(
        "role_is_list",
        one("r.jsonl", lines({"messages": [{"role": ["user"], "content": "x"}]})),
        2,
        "unknown role",
    ),
    Case(
        "from_is_object",
        one("s.jsonl", lines({"conversations": [{"from": {"a": 1}, "value": "x"}]})),
        2,
        "unknown role",
    ),
    Case(
        "preference_role_list",
        one(
            "p.jsonl",
            lines({"prompt": "q", "chosen": [{"role": ["assistant"], "content": "a"}], "rejected": "b"}),
        ),
        2,
        "unknown role",
    ),
    Case("turn_is_string", one("t.jsonl", lines({"messages": ["hello", "world"]})), 2, "expected an object"),
    Case("history_not_pairs", one("h.jsonl", lines({**GOOD, "history": [[["a"], {"b": 1}]]})), 2, "history"),
    Case("parquet_role_lists", parquet_case("roles.parquet", _role_lists), 2, "unknown role"),
    # text printed as Rich markup
    Case("role_markup", human("m.jsonl", lines({"messages": [{"role": "[/]", "content": "x"}]})), 2, "'[/]'"),
    Case("key_markup", human("k.jsonl", lines({"[/]": 1})), 2, "'[/]'"),
    Case(
        "role_markup_json", one("m.jsonl", lines({"messages": [{"role": "[/]", "content": "x"}]})), 2, "[/]"
    ),
    Case(
        "name_markup",
        lambda d: ["datasets", "validate", str(put(d, "a[/]b.jsonl", lines(GOOD)).relative_to(d))],
        0,
        "a[/]b.jsonl",
    ),
    Case(
        "role_markup_human",
        lambda d: [
            "datasets",
            "validate",
            put(d, "m.jsonl", lines({"messages": [{"role": "[bold]x[/]", "content": "x"}]})).name,
        ],
        2,
        "[bold]x[/]",
    ),
    # parquet
    # out of range is damaged data, reported with its column (it used to become "<value out of range: …>")
    Case("parquet_timestamps_out_of_range", parquet_case("ts.parquet", _timestamps), 2, "column 'when'"),
    Case(
        "parquet_timestamp_as_text",
        parquet_case("tt.parquet", _timestamp_as_text),
        2,
        "timestamp[ms] from Parquet column 'instruction'",
    ),
    Case(
        "parquet_shared_dictionary_string",
        parquet_case("shared.parquet", _shared_dictionary_string, compression="zstd"),
        2,
        "TUNEFORGE_MAX_DATASET_MB",
        {"TUNEFORGE_MAX_DATASET_MB": "512"},
    ),
    Case(
        "parquet_nested_timestamps", parquet_case("nts.parquet", _nested_timestamps), 2, "cannot be converted"
    ),
    Case(
        "parquet_refused_threads",
        parquet_case("wide.parquet", _refused_wide, row_group_size=1000),
        2,
        "could not detect",
    ),
    Case(
        "parquet_dictionary_bomb",
        parquet_case("bomb.parquet", _dictionary_bomb, compression="zstd"),
        2,
        "TUNEFORGE_MAX_DATASET_MB",
    ),
    Case(
        "parquet_nested_dictionary_bomb",
        parquet_case("nested.parquet", _nested_dictionary_bomb, compression="zstd"),
        2,
        "TUNEFORGE_MAX_DATASET_MB",
    ),
    Case("parquet_garbage", one("g.parquet", b"PAR1" + os.urandom(3000) + b"PAR1"), 2, "Parquet"),
    Case(
        "parquet_page_bomb",
        parquet_case(
            "pages.parquet", _page_bomb, compression="zstd", use_dictionary=False, data_page_size=2**30
        ),
        2,
        "held at once",
    ),
    Case("parquet_damaged_page_header", _damaged_page_header, 2, "not a readable Parquet file"),
    Case("parquet_extra_column_chunk", _extra_column_chunk, 2, "a damaged footer"),
    Case("parquet_shared_column_chunks", _shared_chunks, 2, "share the same bytes"),
    Case("parquet_bool_map_page_header", _bool_map_page_header, 2, "not a readable Parquet file"),
    Case("parquet_int96_byte_array_footer", _int96_byte_array, 2, "not a readable Parquet file"),
    Case("parquet_empty_row_group_between", _empty_row_group_between, 0, '"records": 30'),
    # zip members that open but fail to read
    Case(
        "zip_bad_crc",
        one("crc.zip", damaged(zip_bytes({"a.jsonl": lines(GOOD).encode() * 50}, zipfile.ZIP_STORED))),
        2,
        "CRC",
    ),
    Case(
        "zip_damaged_deflate",
        one("dfl.zip", damaged(zip_bytes({"a.jsonl": os.urandom(4000).hex().encode()}), 0.3)),
        2,
        "cannot be read",
    ),
    Case(
        "zip_encrypted_flag",
        one("enc.zip", patch_zip(zip_bytes({"a.jsonl": lines(GOOD).encode()}), flags=0x1)),
        2,
        "encrypted",
    ),
    Case(
        "zip_deflate64",
        one("d64.zip", patch_zip(zip_bytes({"a.jsonl": lines(GOOD).encode()}), method=9)),
        2,
        "compression method",
    ),
    Case(
        "zip_non_utf8_name",
        one(
            "name.zip",
            patch_zip(zip_bytes({"ab.jsonl": lines(GOOD).encode()}), flags=0x800, name=b"\xff\xfe.jsonl"),
        ),
        2,
        "zip",
    ),
    Case("zip_symlink_member", _symlink_member, 2, "symbolic link"),
    Case(
        "zip_headers_disagree_long_names",
        one(
            "hd.zip",
            patch_zip(zip_bytes({"a" * 300 + ".jsonl": b"{}"}), name=b"b" * 300 + b".jsonl", local_only=True),
        ),
        2,
        "…",
    ),
    # bzip2 and LZMA members: zipfile inflates them without a bound (1.5 GiB → 4.3 GB); refused by method
    Case(
        "zip_bzip2",
        one("bz.zip", zip_bytes({"a.jsonl": lines(GOOD).encode()}, zipfile.ZIP_BZIP2)),
        2,
        "compression method bzip2",
    ),
    Case(
        "zip_lzma",
        one("lz.zip", zip_bytes({"a.jsonl": lines(GOOD).encode()}, zipfile.ZIP_LZMA)),
        2,
        "compression method LZMA",
    ),
    Case(
        "zip_end_record_claims_fewer",
        _zip_claiming_fewer,
        2,
        "holds 300 entries",
        {"TUNEFORGE_MAX_FILES": "100"},
    ),
    Case("zip_million_csv_columns", _wide_csv_zip, 2, "1,000,000 columns"),
    Case("zip_200mib_of_spaces", _spaces_zip, 0, '"records": 1'),
    Case("zip_not_a_zip", one("x.zip", b"PK\x05\x06" + b"\0" * 18 + os.urandom(100)), 2, "zip"),
    # memory: an entry far larger than its zip, counted as it is read
    # (300 MiB from a 300 KB zip, read in chunks: one line far over the record limit, then valid records)
    Case(
        "zip_one_huge_line",
        one("line.zip", bomb_zip("a.jsonl", b"x" * 2**20, 300)),
        2,
        "TUNEFORGE_MAX_RECORD_MB",
    ),
    Case(
        "zip_over_limit",
        one("bomb.zip", bomb_zip("a.jsonl", lines(GOOD).encode() * 20_000, 300)),
        2,
        "TUNEFORGE_MAX_DATASET_MB",
        {"TUNEFORGE_MAX_DATASET_MB": "64"},
    ),
    # special files
    Case("fifo", _fifo, 2, "FIFO"),
    Case("fifo_in_folder", _fifo_in_folder, 2, "FIFO"),
    Case("symlink_to_dev_zero", _dev_zero_link, 2, "device"),
    Case("symlink_leaving_folder", _link_leaving_folder, 2, "outside the dataset folder"),
    Case("name_too_long", _long_name, 2, "too long"),
    Case("too_many_files", _many_files, 2, "TUNEFORGE_MAX_FILES", {"TUNEFORGE_MAX_FILES": "10"}),
    # bounds as settings
    Case(
        "bad_setting",
        one("ok.jsonl", lines(GOOD)),
        2,
        "TUNEFORGE_MAX_DATASET_MB",
        {"TUNEFORGE_MAX_DATASET_MB": "lots"},
    ),
    Case(
        "too_many_records",
        one("n.jsonl", lines(*[{**GOOD, "input": str(i)} for i in range(50)])),
        2,
        "TUNEFORGE_MAX_RECORDS",
        {"TUNEFORGE_MAX_RECORDS": "20"},
    ),
    Case(
        "line_over_limit",
        one("l.jsonl", lines(GOOD, {**GOOD, "output": "y" * 200_000}, GOOD)),
        2,
        "TUNEFORGE_MAX_RECORD_MB",
        {"TUNEFORGE_MAX_RECORD_MB": "0.1"},
    ),
    Case(
        "json_element_over_limit",
        one("l.json", json.dumps([GOOD, {**GOOD, "output": "y" * 200_000}])),
        2,
        "TUNEFORGE_MAX_RECORD_MB",
        {"TUNEFORGE_MAX_RECORD_MB": "0.1"},
    ),
    Case(
        "csv_row_over_limit",
        one("l.csv", "instruction,output\n" + "a," + "b" * 200_000 + "\n"),
        2,
        "TUNEFORGE_MAX_RECORD_MB",
        {"TUNEFORGE_MAX_RECORD_MB": "0.1"},
    ),
    Case("many_bad_lines", one("bad.jsonl", "nope\n" * 5000), 2, "TUNEFORGE_MAX_PROBLEMS"),
    Case(
        "file_over_limit",
        one("big.jsonl", lines(GOOD) * 40_000),
        2,
        "TUNEFORGE_MAX_DATASET_MB",
        {"TUNEFORGE_MAX_DATASET_MB": "1"},
    ),
    # false rejections, now accepted
    Case(
        "u2028_in_jsonl",
        one("u.jsonl", lines({**GOOD, "output": "a\u2028b\u0085c\x1cd"})),
        0,
        '"valid": true',
    ),
    Case(
        "csv_long_field", one("f.csv", "instruction,output\nhi," + "z" * 200_000 + "\n"), 0, '"valid": true'
    ),
    # broken text
    Case("gbk", one("g.jsonl", lines({"instruction": "今天", "output": "好"}).encode("gbk")), 2, "GBK"),
    Case("lone_surrogate", one("s.json", '[{"instruction": "a", "output": "\\ud800"}]'), 2, "surrogate"),
    Case("csv_unclosed_quote", one("q.csv", 'instruction,output\n"a,b\n'), 2, "'output'"),
    Case("csv_nul", one("n.csv", "instruction,output\na\0,b\n"), 0, '"valid": true'),
    Case("json_truncated", one("t.json", json.dumps([GOOD] * 3)[:-20]), 2, "invalid JSON"),
    Case("json_object", one("o.json", json.dumps({"data": [GOOD]})), 2, "'data'"),
    Case("json_scalar", one("s.json", "42"), 2, "got number"),
    Case("jsonl_as_json", one("j.json", lines(GOOD, GOOD)), 2, "JSON Lines"),
    Case("empty", one("e.jsonl", ""), 2, "empty"),
    Case("whitespace", one("w.json", " \n\t\n"), 2, "empty"),
    Case("jsonl_cr_line_ends", one("cr.jsonl", lines(GOOD, GOOD).replace("\n", "\r")), 0, '"records": 2'),
    Case(
        "jsonl_bom_on_line_3",
        one("bom.jsonl", lines(GOOD, GOOD) + "\ufeff" + lines(GOOD)),
        2,
        "byte-order mark",
    ),
    Case(
        "json_bom_inside",
        one("bom.json", f"[{json.dumps(GOOD)},\ufeff{json.dumps(GOOD)}]"),
        2,
        "byte-order mark",
    ),
    # a user's chat template, bounded by the sandbox (3.2 GB and "internal error: out of memory")
    Case(
        "template_string_times",
        _template_case("{{ 'x' * 1500000000 }}"),
        2,
        "str * 1500000000",
        seconds=45,  # transformers and a tokenizer are loaded first
    ),
    Case(
        "template_nested_ranges",
        _template_case("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"),
        2,
        "loop iterations",
        seconds=45,
    ),
    Case(
        "template_nested_string_loops",  # loops over a string, not a range: these ran for hours
        _template_case("{% set s = 'x' * 100000 %}{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}"),
        2,
        "loop iterations",
        seconds=45,
    ),
    Case(
        "template_macro_recursion",
        _template_case("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"),
        2,
        "macro",
        seconds=45,
    ),
    Case("binary_jsonl", one("b.jsonl", os.urandom(5000)), 2, "UTF-8"),
    # options
    Case(
        "json_bad_format",
        lambda d: validate(put(d, "ok.jsonl", lines(GOOD)).name, "--format", "nope"),
        2,
        '"valid": false',
    ),
    Case(
        "json_bad_map",
        lambda d: validate(put(d, "ok.jsonl", lines(GOOD)).name, "--map", "garbage"),
        2,
        '"valid": false',
    ),
    Case(
        "create_invalid_leaves_nothing",
        lambda d: ["datasets", "create", put(d, "bad.jsonl", "[\n").name],
        2,
        "invalid",
    ),
]
