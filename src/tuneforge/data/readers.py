"""Read dataset files (json, jsonl, csv, parquet, folders, zips) into raw rows with their location.

Every problem is collected, not raised at the first: a person fixing a file wants the whole list.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tuneforge.errors import Problem

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


@dataclass
class RawRow:
    data: dict
    file: str
    index: int  # 0-based record number within its file
    line: int | None = None  # 1-based line for line-oriented files


@dataclass
class ReadResult:
    rows: list[RawRow] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def decode_utf8(raw: bytes, name: str, errors: list[Problem]) -> str | None:
    """Decode UTF-8 (BOM or not); on failure say where, and whether GBK would have worked."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        hint = "Save it as UTF-8."
        try:
            raw.decode("gbk")
            hint = "It decodes as GBK: convert it with `iconv -f GBK -t UTF-8 IN > OUT`."
        except UnicodeDecodeError:
            pass
        errors.append(
            Problem(
                f"not UTF-8 (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}). {hint}",
                file=name,
                line=line,
            )
        )
        return None


def _read_json(text: str, name: str, out: ReadResult) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if text.lstrip().startswith("{") and "\n{" in text:
            hint = " It looks like JSON Lines: rename it to .jsonl."
        out.errors.append(
            Problem(f"invalid JSON: {exc.msg} (column {exc.colno}).{hint}", file=name, line=exc.lineno)
        )
        return
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        hint = f" If the records are under {lists[0]!r}, extract that list." if len(lists) == 1 else ""
        out.errors.append(
            Problem(
                "expected a list of records at the top level; got an object. Wrap a single record in [ ]."
                + hint,
                file=name,
            )
        )
        return
    if not isinstance(value, list):
        out.errors.append(Problem(f"expected a list of records; got {type(value).__name__}.", file=name))
        return
    for i, item in enumerate(value):
        if isinstance(item, dict):
            out.rows.append(RawRow(item, name, i))
        else:
            out.errors.append(Problem(f"expected an object; got {type(item).__name__}.", file=name, record=i))


def _read_jsonl(text: str, name: str, out: ReadResult) -> None:
    index = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            out.errors.append(
                Problem(f"invalid JSON: {exc.msg} (column {exc.colno}).", file=name, line=lineno)
            )
            index += 1
            continue
        if isinstance(item, dict):
            out.rows.append(RawRow(item, name, index, lineno))
        else:
            out.errors.append(
                Problem(f"expected an object; got {type(item).__name__}.", file=name, line=lineno)
            )
        index += 1


def _read_csv(text: str, name: str, out: ReadResult) -> None:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    index = 0
    start_line = 2
    try:
        for row in reader:
            if None in row:
                out.errors.append(
                    Problem(
                        "more cells than header columns; quote fields holding commas.",
                        file=name,
                        line=start_line,
                    )
                )
            else:
                out.rows.append(RawRow({k: v for k, v in row.items()}, name, index, start_line))
            index += 1
            start_line = reader.line_num + 1
    except csv.Error as exc:
        out.errors.append(Problem(f"invalid CSV: {exc}", file=name, line=reader.line_num))
    if reader.fieldnames is None:
        out.errors.append(Problem("empty CSV: no header row.", file=name))


def _read_parquet(raw: bytes, name: str, out: ReadResult) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises several types for a broken file
        out.errors.append(Problem(f"not a readable Parquet file: {exc}", file=name))
        return
    for i, item in enumerate(table.to_pylist()):
        out.rows.append(RawRow(item, name, i))


def _read_bytes(raw: bytes, name: str, out: ReadResult) -> None:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".parquet":
        _read_parquet(raw, name, out)
        return
    text = decode_utf8(raw, name, out.errors)
    if text is None:
        return
    if not text.strip():
        out.errors.append(Problem("empty file.", file=name))
        return
    {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv}[suffix](text, name, out)


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts and not (p.parts and ":" in p.parts[0])


def _read_zip(path: Path, limit: int, out: ReadResult) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        out.errors.append(Problem(f"not a readable zip archive: {exc}", file=path.name))
        return
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        unsafe = [m.filename for m in members if not _safe_member(m.filename)]
        for name in unsafe:
            out.errors.append(
                Problem(
                    "zip entry would land outside the dataset folder; rejected. "
                    "Re-create the archive with relative paths.",
                    file=f"{path.name}:{name}",
                )
            )
        if unsafe:
            return
        total = sum(m.file_size for m in members)
        if total > limit:
            out.errors.append(
                Problem(
                    f"unpacks to {total / 2**20:.0f} MiB, over the limit of "
                    f"{limit / 2**20:.0f} MiB (TUNEFORGE_MAX_DATASET_MB).",
                    file=path.name,
                )
            )
            return
        for m in sorted(members, key=lambda m: m.filename):
            p = PurePosixPath(m.filename)
            if _skippable(p.parts):
                continue
            if p.suffix.lower() not in SUPPORTED_SUFFIXES:
                out.warnings.append(
                    Problem("ignored: not .json/.jsonl/.csv/.parquet.", file=f"{path.name}:{m.filename}")
                )
                continue
            _read_bytes(zf.read(m), m.filename, out)


def _skippable(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def dataset_files(path: Path) -> list[Path]:
    """The data files a folder holds, in a stable order."""
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUPPORTED_SUFFIXES
        and not _skippable(p.relative_to(path).parts)
    )


def read_rows(path: Path, max_bytes: int) -> ReadResult:
    """Read every record under ``path`` (file, folder or zip) without raising for bad content."""
    out = ReadResult()
    path = Path(path)
    if not path.exists():
        out.errors.append(Problem("no such file or folder.", file=str(path)))
        return out
    if path.is_dir():
        files = dataset_files(path)
        size = sum(f.stat().st_size for f in files)
        if not files:
            out.errors.append(
                Problem("folder holds no .json, .jsonl, .csv or .parquet files.", file=str(path))
            )
    else:
        files = [path]
        size = path.stat().st_size
    if size > max_bytes:
        out.errors.append(
            Problem(
                f"{size / 2**20:.0f} MiB is over the limit of {max_bytes / 2**20:.0f} MiB "
                "(raise TUNEFORGE_MAX_DATASET_MB).",
                file=str(path),
            )
        )
        return out
    out.files = files
    for f in files:
        name = str(f.relative_to(path)) if path.is_dir() else f.name
        suffix = f.suffix.lower()
        if suffix == ".zip":
            _read_zip(f, max_bytes, out)
        elif suffix in SUPPORTED_SUFFIXES:
            _read_bytes(f.read_bytes(), name, out)
        else:
            out.errors.append(
                Problem(
                    "unsupported file type; use .json, .jsonl, .csv, .parquet, a folder or a .zip of them.",
                    file=name,
                )
            )
    if not out.rows and not out.errors:
        out.errors.append(Problem("no records: the dataset is empty.", file=path.name))
    return out
