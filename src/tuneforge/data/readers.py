"""Read dataset files (json, jsonl, csv, parquet, folders, zips) into raw rows, streaming, with bounds.

A dataset may come from anyone (an HTTP upload), so nothing in it may crash, hang or exhaust the
process: every file is read in chunks with the bytes counted as they are read (never as a file or an
archive declares them), and records, record length, nesting depth, number size, files and problems are
bounded by settings (``Limits``, limits.py). Only regular files and folders are opened (sources.py).
Problems are collected, not raised at the first: a person fixing a file wants the whole list. Rows are
yielded one at a time; nothing here holds a whole dataset in memory.

This module is the Reader (one method per file type) and the entry points; the bytes come from
sources.py and archives.py, JSON lists from json_stream.py, Parquet from parquet.py.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tuneforge.errors import Problem
from tuneforge.settings import env_name

from .archives import zip_rows
from .json_stream import BoundedJson, JsonLimitError, array_values, json_type
from .limits import (
    MAX_COLUMNS,
    READ_ERRORS,
    Budget,
    FileProblem,
    Limits,
    Sink,
    StopReading,
    mib,
    too_long,
    too_many_columns,
    why_unreadable,
)
from .parquet import iter_parquet_rows
from .problem_codes import problem
from .sources import (
    SUPPORTED_SUFFIXES,
    counted_chunks,
    cr_lines_as_lf,
    not_utf8,
    open_regular,
    split_lines,
    walk_folder,
)

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------------------------------ readers


class Reader:
    """Reads one dataset; ``rows()`` yields RawRows and sends problems to the sink."""

    def __init__(self, limits: Limits, sink: Sink, budget: Budget):
        self.limits, self.sink, self.budget = limits, sink, budget
        self.json = BoundedJson(limits)

    def row(self, data, name: str, index: int, line: int | None = None) -> RawRow | None:
        self.budget.take_record(name)
        if isinstance(data, dict):
            return RawRow(data, name, index, line)
        self.sink.error(problem("not_an_object", file=name, line=line, record=index + 1, got=json_type(data)))
        return None

    # JSON Lines ------------------------------------------------------------------------------------

    def jsonl(self, chunks: Iterator[bytes], name: str) -> Iterator[RawRow]:
        index, offset, seen = 0, 0, False
        for lineno, raw in split_lines(cr_lines_as_lf(chunks), name, self.limits):
            if raw is None:
                # Reported once: a file that is one over-long line (or gigabytes of NUL) is not "empty".
                self.sink.error(too_long(name, lineno, self.limits))
                index, seen = index + 1, True
                continue
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw, offset = raw[3:], 3
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8(raw, exc, offset, name, lineno) from None
            offset += len(raw) + 1
            if not text.strip():
                continue
            seen = True
            try:
                item = self.json.loads(text)
            except json.JSONDecodeError as exc:
                code = "invalid_json_bom" if text.startswith("\ufeff", exc.pos) else "invalid_json"
                self.sink.error(problem(code, file=name, line=lineno, reason=exc.msg, column=exc.colno))
            except JsonLimitError as exc:
                self.sink.error(exc.at(name, line=lineno, record=index + 1))
            else:
                row = self.row(item, name, index, lineno)
                if row is not None:
                    yield row
            index += 1
        if not seen:
            self.sink.error(problem("empty_file", file=name))

    # JSON ------------------------------------------------------------------------------------------

    def json_array(self, chunks: Iterator[bytes], name: str) -> Iterator[RawRow]:
        """A JSON file whose top level is a list of records, parsed one element at a time."""
        for index, value in array_values(chunks, name, self.limits, self.json, self.sink):
            row = self.row(value, name, index)
            if row is not None:
                yield row

    # CSV -------------------------------------------------------------------------------------------

    def csv(self, chunks: Iterator[bytes], name: str) -> Iterator[RawRow]:
        limit = self.limits.max_record_bytes
        # The csv module's default field limit (131,072 characters) refuses honest long fields; the
        # record limit bounds them instead. The limit is process-wide; every CSV read sets it again.
        csv.field_size_limit(limit)
        state = {"row_bytes": 0, "line": 0}

        def lines() -> Iterator[str]:
            offset = 0
            for lineno, raw in split_lines(chunks, name, self.limits):
                state["line"] = lineno
                if raw is None:
                    raise FileProblem(too_long(name, lineno, self.limits))
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw, offset = raw[3:], 3
                state["row_bytes"] += len(raw) + 1
                if state["row_bytes"] > limit:
                    raise FileProblem(too_long(name, lineno, self.limits, "CSV row"))
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise not_utf8(raw, exc, offset, name, lineno) from None
                offset += len(raw) + 1
                yield text + "\n"  # csv needs the newline to keep it inside a quoted field

        chunks = cr_lines_as_lf(chunks)
        reader = csv.reader(lines())
        header = None
        index, start_line = 0, 1
        try:
            for cells in reader:
                state["row_bytes"] = 0
                if header is None:
                    if not cells:
                        start_line = reader.line_num + 1
                        continue
                    if len(cells) > MAX_COLUMNS:
                        raise FileProblem(too_many_columns(len(cells), name))
                    header = cells
                    start_line = reader.line_num + 1
                    continue
                if not cells:  # a blank line, as DictReader skips it
                    start_line = reader.line_num + 1
                    continue
                if len(cells) > len(header):
                    self.sink.error(problem("too_many_cells", file=name, line=start_line))
                else:
                    cells += [None] * (len(header) - len(cells))
                    row = self.row(dict(zip(header, cells, strict=True)), name, index, start_line)
                    if row is not None:
                        yield row
                index += 1
                start_line = reader.line_num + 1
        except csv.Error as exc:
            message = str(exc)
            if "field larger than field limit" in message:
                raise FileProblem(too_long(name, reader.line_num, self.limits, "CSV field")) from None
            raise FileProblem(
                problem("invalid_csv", file=name, line=reader.line_num, reason=message)
            ) from None
        if header is None:
            self.sink.error(problem("empty_csv", file=name))

    # Parquet ---------------------------------------------------------------------------------------

    def parquet(self, source, name: str) -> Iterator[RawRow]:
        index = 0
        for data in iter_parquet_rows(source, name, self.limits, self.budget):
            row = self.row(data, name, index)
            if row is not None:
                yield row
            index += 1

    # Dispatch --------------------------------------------------------------------------------------

    def file_rows(self, fh, name: str) -> Iterator[RawRow]:
        """Rows of one open data file (or zip member) named ``name``; its problems to the sink."""
        suffix = PurePosixPath(name).suffix.lower()
        try:
            if suffix == ".parquet":
                yield from self.parquet(fh, name)
                return
            chunks = counted_chunks(fh, name, self.budget)
            if suffix == ".jsonl":
                yield from self.jsonl(chunks, name)
            elif suffix == ".json":
                yield from self.json_array(chunks, name)
            else:
                yield from self.csv(chunks, name)
        except FileProblem as exc:
            self.sink.error(exc.problem)
        except StopReading:
            raise
        except READ_ERRORS as exc:
            # A zip member that opens but fails to read (bad CRC, damaged deflate data, …).
            self.sink.error(problem("unreadable", file=name, reason=why_unreadable(exc)))


# -------------------------------------------------------------------------------------------- entry


def iter_rows(
    path: Path,
    limits: Limits,
    errors: list[Problem],
    warnings: list[Problem],
    files: list[Path] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[RawRow]:
    """Every record under ``path`` (file, folder or zip), one at a time, without raising for bad
    content: problems are appended to ``errors``/``warnings``; ``files`` receives the files read.
    ``progress(bytes_read, bytes_expected)`` is called as the data is read."""
    sink = Sink(limits, errors, warnings)
    budget = Budget(limits, progress=progress)
    reader = Reader(limits, sink, budget)
    path = Path(path)
    try:
        yield from _dataset_rows(reader, path, files if files is not None else [])
    except StopReading as stop:
        errors.append(stop.problem)
    except FileProblem as exc:
        errors.append(exc.problem)


def _dataset_rows(reader: Reader, path: Path, files: list[Path]) -> Iterator[RawRow]:
    sink, limits, budget = reader.sink, reader.limits, reader.budget
    try:
        st = os.stat(path)  # follows a symlink given as the dataset itself: its target is what is read
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            sink.error(problem("no_such_path", file=str(path)))
        else:
            sink.error(problem("cannot_open", file=str(path), reason=why_unreadable(exc)))
        return
    if stat.S_ISDIR(st.st_mode):
        entries = walk_folder(path, sink, budget)
        if not entries:
            if not sink.errors:
                sink.error(problem("no_data_files", file=str(path)))
            return
        size = sum(size for _, _, size in entries)
        budget.total_hint = size
        if size > limits.max_bytes:
            sink.error(_over_size(size, limits, str(path)))
            return
        for f, name, _ in entries:
            try:
                fh, _ = open_regular(f, name)
            except FileProblem as exc:
                sink.error(exc.problem)
                continue
            with fh:
                files.append(f)
                yield from reader.file_rows(fh, name)
        return
    suffix = path.suffix.lower()
    if suffix != ".zip" and suffix not in SUPPORTED_SUFFIXES:
        sink.error(problem("unsupported_file", file=path.name))
        return
    fh, size = open_regular(path, str(path))
    with fh:
        budget.total_hint = size
        if size > limits.max_bytes:
            sink.error(_over_size(size, limits, str(path)))
            return
        files.append(path)
        if suffix == ".zip":
            yield from zip_rows(fh, path.name, limits, sink, reader.file_rows)
        else:
            yield from reader.file_rows(fh, path.name)


def _over_size(size: int, limits: Limits, where: str) -> Problem:
    return problem(
        "dataset_too_large",
        file=where,
        size=mib(size),
        max=mib(limits.max_bytes),
        env=env_name("max_dataset_mb"),
    )


def read_rows(path: Path, max_bytes: int) -> ReadResult:
    """Every record under ``path`` in one list (small datasets and tests; ``iter_rows`` streams)."""
    out = ReadResult()
    limits = Limits.from_settings(max_bytes)
    out.rows = list(iter_rows(Path(path), limits, out.errors, out.warnings, out.files))
    if not out.rows and not out.errors:
        out.errors.append(problem("empty_dataset", file=Path(path).name))
    return out
