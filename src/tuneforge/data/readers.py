"""Read dataset files (json, jsonl, csv, parquet, folders, zips) into raw rows, streaming, with bounds.

A dataset may come from anyone (an HTTP upload), so nothing in it may crash, hang or exhaust the
process: every file is read in chunks with the bytes counted as they are read (never as a file or an
archive declares them), and records, record length, nesting depth, number size, files and problems are
bounded by settings (``Limits``). Only regular files and folders are opened. Problems are collected,
not raised at the first: a person fixing a file wants the whole list. Rows are yielded one at a time;
nothing here holds a whole dataset in memory.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import json
import logging
import lzma
import os
import re
import reprlib
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tuneforge.data.json_depth import nesting_over
from tuneforge.errors import Problem
from tuneforge.settings import env_name, get_settings

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
CHUNK = 1 << 20
MiB = 2**20
# A zip's central directory is parsed whole by zipfile; no honest archive of max_files entries needs more.
MAX_ZIP_DIRECTORY = 64 * MiB
# A table this wide is not a dataset (a 2.3 MB zip of a 1M-column CSV took minutes); records use a few.
MAX_COLUMNS = 10_000


@dataclass
class RawRow:
    data: dict
    file: str
    index: int  # 0-based record number within its file
    line: int | None = None  # 1-based line for line-oriented files


class TemporalText(str):
    """A Parquet timestamp, date, time or duration, as the text Arrow writes for it, remembering its
    column and type: formats refuse it where text belongs (its text depends on the writer's unit and
    time zone; a mis-mapped column would train on "1970-01-01 00:00:00.000")."""

    column: str
    kind: str

    def __new__(cls, text: str, column: str, kind: str) -> TemporalText:
        value = super().__new__(cls, text)
        value.column, value.kind = column, kind
        return value


@dataclass
class ReadResult:
    rows: list[RawRow] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """What one dataset may make the readers do; each bound names the setting that raises it."""

    max_bytes: int
    max_records: int
    max_record_bytes: int
    max_depth: int
    max_number_digits: int
    max_files: int
    max_problems: int

    @classmethod
    def from_settings(cls, max_bytes: int | None = None) -> Limits:
        s = get_settings()
        return cls(
            max_bytes=max_bytes if max_bytes is not None else s.max_dataset_mb * MiB,
            max_records=s.max_records,
            max_record_bytes=max(1, int(s.max_record_mb * MiB)),
            max_depth=s.max_depth,
            max_number_digits=s.max_number_digits,
            max_files=s.max_files,
            max_problems=s.max_problems,
        )


def _mib(n: int) -> str:
    return f"{n / MiB:.3g} MiB"


class StopReading(Exception):
    """A bound of the whole dataset was reached: record the problem and read no further."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


class FileProblem(Exception):
    """This file cannot be read further (its problem says why); the next file is read."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


class Sink:
    """Where problems go: bounded, so a file of a million bad lines cannot fill the memory."""

    def __init__(self, limits: Limits, errors: list[Problem], warnings: list[Problem]):
        self.limits, self.errors, self.warnings = limits, errors, warnings

    def error(self, problem: Problem) -> None:
        self.errors.append(problem)
        if len(self.errors) >= self.limits.max_problems:
            raise StopReading(Problem(too_many_problems(len(self.errors))))

    def warning(self, problem: Problem) -> None:
        if len(self.warnings) < self.limits.max_problems:
            self.warnings.append(problem)


def too_many_columns(n: int, name: str) -> Problem:
    return Problem(
        f"{n:,} columns: more than the {MAX_COLUMNS:,} a dataset file may have. Keep the columns the "
        "records need (e.g. prompt and response) and drop the others.",
        file=name,
    )


def too_many_problems(n: int) -> str:
    return f"stopped reading after {n} problems ({env_name('max_problems')}); fix these and validate again."


class Budget:
    """Running totals over the whole dataset, checked as bytes and records are read."""

    def __init__(self, limits: Limits, total_hint: int = 0, progress: Callable | None = None):
        self.limits, self.read, self.records, self.files = limits, 0, 0, 0
        self.total_hint, self.progress = total_hint, progress

    def take_bytes(self, n: int, where: str) -> None:
        self.read += n
        if self.read > self.limits.max_bytes:
            raise StopReading(
                Problem(
                    f"more than {_mib(self.limits.max_bytes)} of data read: over the limit "
                    f"({env_name('max_dataset_mb')}).",
                    file=where,
                )
            )
        if self.progress is not None:
            self.progress(self.read, max(self.read, self.total_hint))

    def take_record(self, where: str) -> None:
        self.records += 1
        if self.records > self.limits.max_records:
            raise StopReading(
                Problem(
                    f"more than {self.limits.max_records} records: over the limit "
                    f"({env_name('max_records')}).",
                    file=where,
                )
            )

    def take_file(self, where: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise StopReading(
                Problem(
                    f"more than {self.limits.max_files} files: over the limit ({env_name('max_files')}).",
                    file=where,
                )
            )


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4


def short(value) -> str:
    """A user-supplied value for a message: repr'd and cut, so a huge or deep value stays one line."""
    return _SHORT.repr(value)


# ---------------------------------------------------------------------------------------------- JSON


class JsonLimitError(ValueError):
    pass


# Every ASCII digit → b"0", every other byte → b" ": a run of N digits is then a plain substring search
# (0.03 s on 7.6 MiB, where re.search("[0-9]{N}") took 0.3 s)
_ZERO_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))


def _digits_as_zeros(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass").translate(_ZERO_DIGITS)


class BoundedJson:
    """json decoding with the number size and nesting depth bounded.

    Python's own limits fail badly on hostile input: an integer over 4,300 digits raises ValueError,
    and nesting deeper than the recursion limit raises RecursionError, in parsing or in any later
    recursive walk (repr, copy, json.dumps). Both are turned into one error naming the setting.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        digits = limits.max_number_digits
        # Only a text holding a longer run of digits needs the per-integer Python hook (a call per
        # integer, twice json's own time on a body of small numbers); every other text uses C's.
        self._long_digits = b"0" * (digits + 1)

        def parse_int(text: str) -> int:
            if len(text) > digits + (text[0] == "-"):
                raise JsonLimitError(
                    f"a number with {len(text.lstrip('-'))} digits; at most {digits} "
                    f"({env_name('max_number_digits')})."
                )
            return int(text)

        self.decoder = json.JSONDecoder(parse_int=parse_int)
        self._plain = json.JSONDecoder()

    def too_deep(self, text: str) -> bool:
        """Whether the JSON text nests deeper than the limit, from its characters, before parsing."""
        return nesting_over(text, self.limits.max_depth)

    def depth_problem(self) -> str:
        return f"lists/objects nested more than {self.limits.max_depth} deep ({env_name('max_depth')})."

    def loads(self, text: str):
        """The value of one complete JSON text; JsonLimitError or JSONDecodeError when it is bad."""
        if self.too_deep(text):
            raise JsonLimitError(self.depth_problem())
        decoder = self.decoder if self._long_digits in _digits_as_zeros(text) else self._plain
        try:
            return decoder.decode(text)
        except RecursionError:  # the scan bounds depth; kept for a recursion limit set below it
            raise JsonLimitError(self.depth_problem()) from None


def _gbk_hint(raw: bytes) -> str:
    for cut in range(4):  # a chunk may end inside a two-byte GBK character
        try:
            raw[: len(raw) - cut].decode("gbk")
            return " It decodes as GBK: convert it with `iconv -f GBK -t UTF-8 IN > OUT`."
        except UnicodeDecodeError:
            continue
    return " Save it as UTF-8."


def _not_utf8(raw: bytes, exc: UnicodeDecodeError, offset: int, name: str, line: int) -> FileProblem:
    data = exc.object if isinstance(exc.object, bytes) else raw
    bad = data[exc.start] if exc.start < len(data) else 0
    return FileProblem(
        Problem(
            f"not UTF-8 (invalid byte 0x{bad:02x} at offset {offset + exc.start}).{_gbk_hint(data)}",
            file=name,
            line=line,
        )
    )


# --------------------------------------------------------------------------------- byte sources


def _chunks(fh, name: str, budget: Budget) -> Iterator[bytes]:
    """The bytes of an open file or zip member, counted against the budget as they are read."""
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            return
        budget.take_bytes(len(chunk), name)
        yield chunk


def _lines(chunks: Iterator[bytes], name: str, limits: Limits) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line without its newline) split on b"\n" only, or (number, None) for a line over
    the record limit (its bytes are skipped, never held). Splitting bytes on newline alone keeps U+2028,
    U+0085 and \x1c inside a JSON string, where they are legal (``str.splitlines`` splits on them)."""
    limit = limits.max_record_bytes
    lineno = 0
    pending: list[bytes] = []  # the start of a line that continues in the next chunk
    pending_len = 0
    skipping = False  # inside a line already reported as too long
    for chunk in chunks:
        if skipping:
            end = chunk.find(b"\n")
            if end < 0:
                continue
            chunk, skipping = chunk[end + 1 :], False
        parts = chunk.split(b"\n")
        tail = parts.pop()
        if parts and pending:
            parts[0] = b"".join([*pending, parts[0]])
            pending, pending_len = [], 0
        for part in parts:
            lineno += 1
            yield lineno, (part if len(part) <= limit else None)
        if tail:
            pending.append(tail)
            pending_len += len(tail)
            if pending_len > limit:
                lineno += 1
                yield lineno, None
                pending, pending_len, skipping = [], 0, True
    if pending:
        lineno += 1
        line = b"".join(pending)
        yield lineno, (line if len(line) <= limit else None)


def _cr_lines_as_lf(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A file whose lines end in a bare CR (old Mac spreadsheets and editors) split on LF like any
    other, in CSV and JSON Lines alike: when its first chunk holds CRs and no LF, every CR becomes an
    LF (JSON forbids a raw CR inside a string, so none is lost)."""
    first = next(chunks, None)
    if first is None:
        return
    if b"\n" in first or b"\r" not in first:
        yield first
        yield from chunks
        return
    yield first.replace(b"\r", b"\n")
    for chunk in chunks:
        yield chunk.replace(b"\r", b"\n")


# A byte-order mark anywhere but at the very start: usually files joined with `cat`, each with its own.
_BOM_HINT = (
    " It is a byte-order mark (BOM, bytes EF BB BF) inside the file, as left by joining files with "
    '`cat`; save each part without a BOM (UTF-8, not "UTF-8 with BOM") or delete it.'
)


def _too_long(name: str, line: int | None, limits: Limits, what: str = "line") -> Problem:
    return Problem(
        f"{what} longer than {_mib(limits.max_record_bytes)} ({env_name('max_record_mb')}); "
        "split the record or raise the limit.",
        file=name,
        line=line,
    )


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
        self.sink.error(
            Problem(f"expected an object; got {_json_type(data)}.", file=name, line=line, record=index)
        )
        return None

    # JSON Lines ------------------------------------------------------------------------------------

    def jsonl(self, chunks: Iterator[bytes], name: str) -> Iterator[RawRow]:
        index, offset, seen = 0, 0, False
        for lineno, raw in _lines(_cr_lines_as_lf(chunks), name, self.limits):
            if raw is None:
                # Reported once: a file that is one over-long line (or gigabytes of NUL) is not "empty".
                self.sink.error(_too_long(name, lineno, self.limits))
                index, seen = index + 1, True
                continue
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw, offset = raw[3:], 3
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(raw, exc, offset, name, lineno) from None
            offset += len(raw) + 1
            if not text.strip():
                continue
            seen = True
            try:
                item = self.json.loads(text)
            except json.JSONDecodeError as exc:
                hint = _BOM_HINT if text.startswith("\ufeff", exc.pos) else ""
                self.sink.error(
                    Problem(f"invalid JSON: {exc.msg} (column {exc.colno}).{hint}", file=name, line=lineno)
                )
            except JsonLimitError as exc:
                self.sink.error(Problem(str(exc), file=name, line=lineno, record=index))
            else:
                row = self.row(item, name, index, lineno)
                if row is not None:
                    yield row
            index += 1
        if not seen:
            self.sink.error(Problem("empty file.", file=name))

    # JSON ------------------------------------------------------------------------------------------

    def json_array(self, chunks: Iterator[bytes], name: str) -> Iterator[RawRow]:
        """A JSON file whose top level is a list of records, parsed one element at a time."""
        text = _JsonText(chunks, name, self.limits)
        first = text.peek()
        if first == "":
            self.sink.error(Problem("empty file.", file=name))
            return
        if first != "[":
            self._json_not_a_list(text, name)
            return
        text.pos += 1
        index = 0
        while True:
            if text.peek() == "]":
                text.pos += 1
                break
            value = self._json_value(text, name, index)
            if value is not _FAILED:
                row = self.row(value, name, index)
                if row is not None:
                    yield row
            index += 1
            sep = text.peek()
            if sep == ",":
                text.pos += 1
                if text.peek() == "]":
                    raise FileProblem(text.problem("Expecting value"))
                continue
            if sep == "]":
                text.pos += 1
                break
            raise FileProblem(
                text.problem("Expecting ',' delimiter" if sep else "Expecting ',' delimiter or ']'")
            )
        if text.peek() != "":
            raise FileProblem(text.problem("Extra data"))

    def _json_value(self, text: _JsonText, name: str, index: int):
        """Decode the value at the cursor; a value over the limits is reported and skipped."""
        try:
            value, size = text.decode(self.json.decoder)
        except FileProblem as exc:
            if exc.problem.record is None and exc.problem.line is None:
                exc.problem.record = index
            raise
        except RecursionError:
            raise FileProblem(Problem(self.json.depth_problem(), file=name, record=index)) from None
        except JsonLimitError as exc:
            raise FileProblem(Problem(str(exc), file=name, record=index)) from None
        if isinstance(value, dict | list) and self.json.too_deep(text.buf[text.pos - size : text.pos]):
            self.sink.error(Problem(self.json.depth_problem(), file=name, record=index))
            return _FAILED
        return value

    def _json_not_a_list(self, text: _JsonText, name: str) -> None:
        try:
            value, _ = text.decode(self.json.decoder)
        except (RecursionError, JsonLimitError):
            value = _FAILED
        after = text.peek()
        if after:
            problem = text.problem("Extra data")
            if after == "{":
                problem.message += " It looks like JSON Lines: rename it to .jsonl."
            self.sink.error(problem)
            return
        if not isinstance(value, dict):
            kind = "something else" if value is _FAILED else _json_type(value)
            self.sink.error(Problem(f"expected a list of records; got {kind}.", file=name))
            return
        lists = [k for k, v in value.items() if isinstance(v, list)]
        hint = f" If the records are under {short(lists[0])}, extract that list." if len(lists) == 1 else ""
        self.sink.error(
            Problem(
                "expected a list of records at the top level; got an object. Wrap a single record in [ ]."
                + hint,
                file=name,
            )
        )

    # CSV -------------------------------------------------------------------------------------------

    def csv(self, chunks: Iterator[bytes], name: str) -> Iterator[RawRow]:
        limit = self.limits.max_record_bytes
        # The csv module's default field limit (131,072 characters) refuses honest long fields; the
        # record limit bounds them instead. The limit is process-wide; every CSV read sets it again.
        csv.field_size_limit(limit)
        state = {"row_bytes": 0, "line": 0}

        def lines() -> Iterator[str]:
            offset = 0
            for lineno, raw in _lines(chunks, name, self.limits):
                state["line"] = lineno
                if raw is None:
                    raise FileProblem(_too_long(name, lineno, self.limits))
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw, offset = raw[3:], 3
                state["row_bytes"] += len(raw) + 1
                if state["row_bytes"] > limit:
                    raise FileProblem(_too_long(name, lineno, self.limits, "CSV row"))
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _not_utf8(raw, exc, offset, name, lineno) from None
                offset += len(raw) + 1
                yield text + "\n"  # csv needs the newline to keep it inside a quoted field

        chunks = _cr_lines_as_lf(chunks)
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
                    self.sink.error(
                        Problem(
                            "more cells than header columns; quote fields holding commas.",
                            file=name,
                            line=start_line,
                        )
                    )
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
                raise FileProblem(_too_long(name, reader.line_num, self.limits, "CSV field")) from None
            raise FileProblem(Problem(f"invalid CSV: {message}", file=name, line=reader.line_num)) from None
        if header is None:
            self.sink.error(Problem("empty CSV: no header row.", file=name))

    # Parquet ---------------------------------------------------------------------------------------

    def parquet(self, source, name: str) -> Iterator[RawRow]:
        from .parquet import iter_parquet_rows

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
            chunks = _chunks(fh, name, self.budget)
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
            self.sink.error(Problem(f"cannot be read: {_reason(exc)}", file=name))


_FAILED = object()
# What reading damaged data raises, from the file system, zipfile and its decompressors.
READ_ERRORS = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
)


def _json_type(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else type(value).__name__)


def _reason(exc: BaseException) -> str:
    """What went wrong reading a file or zip member, in words a person can act on (one line)."""
    text = " ".join((str(exc) or type(exc).__name__).split())
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    if isinstance(exc, RuntimeError) and "encrypted" in text:
        text = "the entry is encrypted; re-create the archive without a password"
    elif isinstance(exc, NotImplementedError):
        text = f"{text} (re-create the archive with plain deflate compression)"
    elif isinstance(exc, zlib.error | lzma.LZMAError | EOFError | zipfile.BadZipFile):
        text = f"damaged data ({text}); re-create the archive"
    return text if len(text) <= 200 else text[:199] + "…"


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class _JsonText:
    """A cursor over the decoded text of a JSON file, refilled chunk by chunk.

    ``decode`` parses one value at the cursor; a value cut by the end of the buffer is retried with
    more text, up to the record limit, so the buffer never holds more than about one record.
    """

    def __init__(self, chunks: Iterator[bytes], name: str, limits: Limits):
        self.chunks, self.name, self.limits = chunks, name, limits
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.line_base = 1  # line number of buf[0]
        self.offset = 0  # bytes decoded so far
        self.first = True

    def _more(self) -> bool:
        if self.eof:
            return False
        if self.pos:  # drop what was parsed
            self.line_base += self.buf.count("\n", 0, self.pos)
            self.buf, self.pos = self.buf[self.pos :], 0
        raw = next(self.chunks, None)
        if raw is None:
            self.eof = True
            raw, final = b"", True
        else:
            final = False
            if self.first and raw.startswith(codecs.BOM_UTF8):
                raw, self.offset = raw[3:], 3
            self.first = False
        try:
            self.buf += self.decoder.decode(raw, final)
        except UnicodeDecodeError as exc:
            line = self.line_base + self.buf.count("\n") + raw[: exc.start].count(b"\n")
            raise _not_utf8(raw, exc, self.offset, self.name, line) from None
        self.offset += len(raw)
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end), leaving the cursor on it."""
        while True:
            # Whitespace is skipped by a regex, about as fast as zip members inflate: a character loop
            # took 257 s over 1.5 GiB of spaces.
            self.pos = _JSON_SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def problem(self, msg: str, pos: int | None = None) -> Problem:
        pos = self.pos if pos is None else pos
        line = self.line_base + self.buf.count("\n", 0, pos)
        column = pos - self.buf.rfind("\n", 0, pos)
        hint = _BOM_HINT if self.buf.startswith("\ufeff", pos) else ""
        return Problem(f"invalid JSON: {msg} (column {column}).{hint}", file=self.name, line=line)

    def decode(self, decoder: json.JSONDecoder):
        """(value, its length in characters) at the cursor, which moves past it."""
        limit = self.limits.max_record_bytes
        need = 0
        while True:
            available = len(self.buf) - self.pos
            if available >= need or self.eof:
                try:
                    value, end = decoder.raw_decode(self.buf, self.pos)
                except json.JSONDecodeError as exc:
                    cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 16
                    if self.eof or not cut:
                        raise FileProblem(self.problem(exc.msg, exc.pos)) from None
                else:
                    # A number at the very end of the buffer may continue in the next chunk.
                    if end < len(self.buf) or self.eof:
                        size = end - self.pos
                        if size > limit:
                            raise FileProblem(_too_long(self.name, None, self.limits, "record"))
                        self.pos = end
                        return value, size
                if available > limit:
                    raise FileProblem(_too_long(self.name, None, self.limits, "record"))
                need = 2 * available + CHUNK  # grow geometrically: a long record is not re-parsed often
            if not self._more():
                continue


# --------------------------------------------------------------------------------- files and folders


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: Path, name: str) -> tuple[object, int]:
    """(binary file object, size) of a regular file; FileProblem for anything else.

    O_NONBLOCK keeps opening a FIFO from blocking until a writer comes; fstat on the open descriptor
    then refuses it (and devices), with no window for the path to be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileProblem(Problem(f"cannot open: {_reason(exc)}.", file=name)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(Problem(f"{_file_kind(st.st_mode)}, not a regular file; refused.", file=name))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _skippable(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def walk_folder(root: Path, sink: Sink, budget: Budget) -> list[tuple[Path, str, int]]:
    """(path, name, size) of the data files under a folder, sorted; symlinks leaving it and special
    files are refused, symlinked folders are not followed (they could loop or leave the folder)."""
    real_root = os.path.realpath(root)
    found: list[tuple[Path, str, int]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            sink.error(Problem(f"cannot list: {_reason(exc)}.", file=str(folder)))
            continue
        for entry in entries:
            budget.take_file(str(root))
            path = Path(entry.path)
            rel = path.relative_to(root)
            name = rel.as_posix()
            if _skippable(rel.parts):
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if not _inside(target, real_root):
                        sink.error(
                            Problem("symbolic link leading outside the dataset folder; refused.", file=name)
                        )
                        continue
                    if os.path.isdir(target):
                        sink.warning(Problem("symbolic link to a folder; not followed.", file=name))
                        continue
                    st = os.stat(target)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                    continue
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                sink.error(Problem(f"cannot read: {_reason(exc)}.", file=name))
                continue
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            if not stat.S_ISREG(st.st_mode):
                sink.error(Problem(f"{_file_kind(st.st_mode)}, not a regular file; refused.", file=name))
                continue
            found.append((path, name, st.st_size))
    return sorted(found, key=lambda entry: entry[1])


# ---------------------------------------------------------------------------------------------- zip


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts and not (p.parts and ":" in p.parts[0])


def _zip_directory(fh, name: str, limits: Limits) -> None:
    """Refuse an archive whose central directory is too big to parse, before zipfile parses it."""
    try:
        end = zipfile._EndRecData(fh)  # the end-of-directory record (zip64 aware); stable since Python 2
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FileProblem(Problem(f"not a readable zip archive: {_reason(exc)}", file=name)) from None
    if not end:
        raise FileProblem(Problem("not a readable zip archive: File is not a zip file", file=name))
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > limits.max_files:
        raise FileProblem(
            Problem(
                f"holds {entries} entries: over the limit of {limits.max_files} ({env_name('max_files')}).",
                file=name,
            )
        )
    if size > MAX_ZIP_DIRECTORY:
        raise FileProblem(Problem(f"zip directory of {_mib(size)}: not a dataset archive.", file=name))


def _open_zip(fh, name: str, limits: Limits) -> zipfile.ZipFile:
    """The archive, its directory checked before and after zipfile parses it: zipfile reads the
    directory by its size, not by the entry count the end record claims (5 claimed, 60,000 held), so
    the entries are counted again as parsed."""
    _zip_directory(fh, name, limits)
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        # a non-UTF-8 name flagged UTF-8 raises UnicodeDecodeError, a ValueError
        raise FileProblem(Problem(f"not a readable zip archive: {_reason(exc)}", file=name)) from None
    entries = len(zf.infolist())
    if entries > limits.max_files:
        zf.close()
        raise FileProblem(
            Problem(
                f"holds {entries} entries: over the limit of {limits.max_files} ({env_name('max_files')}).",
                file=name,
            )
        )
    return zf


# zipfile bounds what one read() inflates only for deflate; its bzip2 and LZMA readers decompress each
# block of compressed input whole (a 1.5 GiB member of one repeated byte came out in one piece).
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 9: "deflate64", 93: "zstandard"}


def _method_problem(m: zipfile.ZipInfo, where: str) -> Problem | None:
    """A problem for a member compressed with anything but deflate (or stored)."""
    if m.compress_type in _ZIP_METHODS:
        return None
    method = _METHOD_NAMES.get(m.compress_type, f"method {m.compress_type}")
    return Problem(
        f"compression method {method}: not read (only deflate, the default of zip, 7-Zip, Windows and "
        "macOS, and uncompressed entries are). Re-create the archive with deflate, e.g. "
        "`zip -r data.zip FOLDER`.",
        file=where,
    )


def zip_rows(reader: Reader, fh, name: str) -> Iterator[RawRow]:
    limits, sink = reader.limits, reader.sink
    with _open_zip(fh, name, limits) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        unsafe = [m.filename for m in members if not _safe_member(m.filename)]
        for member in unsafe:
            sink.error(
                Problem(
                    "zip entry would land outside the dataset folder; rejected. "
                    "Re-create the archive with relative paths.",
                    file=f"{name}:{member}",
                )
            )
        if unsafe:
            return
        declared = sum(m.file_size for m in members)
        if declared > limits.max_bytes:
            sink.error(
                Problem(
                    f"unpacks to {_mib(declared)}, over the limit of {_mib(limits.max_bytes)} "
                    f"({env_name('max_dataset_mb')}).",
                    file=name,
                )
            )
            return
        for m in sorted(members, key=lambda m: m.filename):
            p = PurePosixPath(m.filename)
            if _skippable(p.parts):
                continue
            where = f"{name}:{m.filename}"
            if p.suffix.lower() not in SUPPORTED_SUFFIXES:
                sink.warning(Problem("ignored: not .json/.jsonl/.csv/.parquet.", file=where))
                continue
            if stat.S_ISLNK(m.external_attr >> 16):
                sink.error(Problem("zip entry is a symbolic link; refused.", file=where))
                continue
            method = _method_problem(m, where)
            if method is not None:
                sink.error(method)
                continue
            try:
                member = zf.open(m)
            except (*READ_ERRORS, ValueError) as exc:
                # RuntimeError: encrypted; NotImplementedError: a compression method zipfile lacks;
                # ValueError: a name that is not the UTF-8 its flag claims
                sink.error(Problem(f"cannot be read: {_reason(exc)}", file=where))
                continue
            with member:
                yield from reader.file_rows(member, m.filename)


def _file_and_folder(members: list[zipfile.ZipInfo], name: str) -> None:
    """Refuse an archive naming one path both as a file and as a folder (``a`` and ``a/b``, or ``a`` and
    ``a/``): unpacking it cannot work whichever comes first. Sorted paths and a bisection per file: no
    set of every prefix, which a name of thousands of ``a/`` parts would make quadratic."""

    def norm(m: zipfile.ZipInfo) -> str:
        return "/".join(PurePosixPath(m.filename.replace("\\", "/")).parts)

    paths = sorted(norm(m) for m in members)
    folders = {norm(m) for m in members if m.is_dir()}
    for m in members:
        path = norm(m)
        if m.is_dir():
            continue
        at = bisect.bisect_left(paths, path + "/")
        if path in folders or (at < len(paths) and paths[at].startswith(path + "/")):
            raise FileProblem(
                Problem(
                    f"zip entry {m.filename!r} is a file and also a folder of other entries; refused. "
                    "Rename one of them and re-create the archive.",
                    file=f"{name}:{m.filename}",
                )
            )


def unpack_zip(fh, name: str, dest: Path, limits: Limits) -> int:
    """Unpack an archive (a code upload) under ``dest`` with the same rules as a dataset zip: no entry
    outside ``dest`` (absolute, ``..``, drive letters), no symbolic links, entry count and directory
    bounded, bytes counted as they are written (never as the archive declares them). Raises
    ``FileProblem`` on the first problem; the caller removes ``dest``. Returns the number of files."""
    budget = Budget(limits)
    count = 0
    with _open_zip(fh, name, limits) as zf:
        members = zf.infolist()
        for m in members:
            where = f"{name}:{m.filename}"
            if not _safe_member(m.filename):
                raise FileProblem(
                    Problem(
                        "zip entry would land outside the folder; rejected. "
                        "Re-create the archive with relative paths.",
                        file=where,
                    )
                )
            if stat.S_ISLNK(m.external_attr >> 16):
                raise FileProblem(Problem("zip entry is a symbolic link; refused.", file=where))
            method = _method_problem(m, where)
            if method is not None and not m.is_dir():
                raise FileProblem(method)
        _file_and_folder(members, name)
        if sum(m.file_size for m in members) > limits.max_bytes:
            raise FileProblem(
                Problem(
                    f"unpacks to more than {_mib(limits.max_bytes)} ({env_name('max_dataset_mb')}).",
                    file=name,
                )
            )
        for m in members:
            target = dest.joinpath(*PurePosixPath(m.filename.replace("\\", "/")).parts)
            if m.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as src, open(target, "xb") as out:
                    for chunk in _chunks(src, where, budget):
                        out.write(chunk)
            except StopReading as exc:
                raise FileProblem(exc.problem) from None
            except FileExistsError:
                raise FileProblem(Problem("zip entry appears twice; refused.", file=where)) from None
            except (*READ_ERRORS, ValueError) as exc:
                raise FileProblem(Problem(f"cannot be read: {_reason(exc)}", file=where)) from None
            mode = (m.external_attr >> 16) & 0o777
            if mode & 0o100:  # keep the executable bit of scripts (run.sh)
                target.chmod(0o755)
            count += 1
    return count


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
            sink.error(Problem("no such file or folder.", file=str(path)))
        else:
            sink.error(Problem(f"cannot open: {_reason(exc)}.", file=str(path)))
        return
    if stat.S_ISDIR(st.st_mode):
        entries = walk_folder(path, sink, budget)
        if not entries:
            if not sink.errors:
                sink.error(Problem("folder holds no .json, .jsonl, .csv or .parquet files.", file=str(path)))
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
        sink.error(
            Problem(
                "unsupported file type; use .json, .jsonl, .csv, .parquet, a folder or a .zip of them.",
                file=path.name,
            )
        )
        return
    fh, size = open_regular(path, str(path))
    with fh:
        budget.total_hint = size
        if size > limits.max_bytes:
            sink.error(_over_size(size, limits, str(path)))
            return
        files.append(path)
        if suffix == ".zip":
            yield from zip_rows(reader, fh, path.name)
        else:
            yield from reader.file_rows(fh, path.name)


def _over_size(size: int, limits: Limits, where: str) -> Problem:
    return Problem(
        f"{_mib(size)} is over the limit of {_mib(limits.max_bytes)} (raise {env_name('max_dataset_mb')}).",
        file=where,
    )


def read_rows(path: Path, max_bytes: int) -> ReadResult:
    """Every record under ``path`` in one list (small datasets and tests; ``iter_rows`` streams)."""
    out = ReadResult()
    limits = Limits.from_settings(max_bytes)
    out.rows = list(iter_rows(Path(path), limits, out.errors, out.warnings, out.files))
    if not out.rows and not out.errors:
        out.errors.append(Problem("no records: the dataset is empty.", file=Path(path).name))
    return out
