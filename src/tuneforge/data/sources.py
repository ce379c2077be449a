"""Where a dataset's bytes come from: regular files opened safely, folders walked without leaving them,
bytes counted as they are read, split into lines without holding an over-long one, checked as UTF-8.

Only regular files and folders are opened (a FIFO, a device or a socket is refused without blocking);
symbolic links leaving a dataset folder are refused and symlinked folders not followed. Zip archives
(archives.py) hand their members to the same chunk and line readers.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .limits import CHUNK, Budget, FileProblem, Limits, Sink, why_unreadable
from .problem_codes import problem

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def _is_gbk(raw: bytes) -> bool:
    for cut in range(4):  # a chunk may end inside a two-byte GBK character
        try:
            raw[: len(raw) - cut].decode("gbk")
            return True
        except UnicodeDecodeError:
            continue
    return False


def not_utf8(raw: bytes, exc: UnicodeDecodeError, offset: int, name: str, line: int) -> FileProblem:
    """The problem of bytes that are not UTF-8: where, and whether GBK would have worked."""
    data = exc.object if isinstance(exc.object, bytes) else raw
    bad = data[exc.start] if exc.start < len(data) else 0
    code = "not_utf8_gbk" if _is_gbk(data) else "not_utf8"
    return FileProblem(problem(code, file=name, line=line, byte=f"{bad:02x}", offset=offset + exc.start))


# ------------------------------------------------------------------------------------- bytes and lines


def counted_chunks(fh, name: str, budget: Budget) -> Iterator[bytes]:
    """The bytes of an open file or zip member, counted against the budget as they are read."""
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            return
        budget.take_bytes(len(chunk), name)
        yield chunk


def split_lines(chunks: Iterator[bytes], name: str, limits: Limits) -> Iterator[tuple[int, bytes | None]]:
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


def cr_lines_as_lf(chunks: Iterator[bytes]) -> Iterator[bytes]:
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
        raise FileProblem(problem("cannot_open", file=name, reason=why_unreadable(exc))) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(problem("not_regular_file", file=name, kind=_file_kind(st.st_mode)))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), st.st_size
    except BaseException:
        os.close(fd)
        raise


def skippable(parts: tuple[str, ...]) -> bool:
    """Hidden files and folders and macOS's ``__MACOSX`` resource forks are not data."""
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
            sink.error(problem("cannot_list", file=str(folder), reason=why_unreadable(exc)))
            continue
        for entry in entries:
            budget.take_file(str(root))
            path = Path(entry.path)
            rel = path.relative_to(root)
            name = rel.as_posix()
            if skippable(rel.parts):
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if not _inside(target, real_root):
                        sink.error(problem("link_outside", file=name))
                        continue
                    if os.path.isdir(target):
                        sink.warning(problem("link_to_folder", file=name))
                        continue
                    st = os.stat(target)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                    continue
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                sink.error(problem("unreadable", file=name, reason=why_unreadable(exc)))
                continue
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            if not stat.S_ISREG(st.st_mode):
                sink.error(problem("not_regular_file", file=name, kind=_file_kind(st.st_mode)))
                continue
            found.append((path, name, st.st_size))
    return sorted(found, key=lambda entry: entry[1])
