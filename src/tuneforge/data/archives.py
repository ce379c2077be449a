"""Zip archives, as datasets (their data files read in name order) and as code uploads (unpacked).

Both follow the same rules: the central directory is bounded before zipfile parses it and the entries
counted again after; no entry may land outside its folder (absolute, ``..``, drive letters) or be a
symbolic link; only deflate and stored entries are read (zipfile inflates bzip2 and LZMA blocks whole);
the bytes are counted as they are read, never as the archive declares them.
"""

from __future__ import annotations

import bisect
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TypeVar

from tuneforge.errors import Problem
from tuneforge.settings import env_name

from .limits import READ_ERRORS, Budget, FileProblem, Limits, MiB, Sink, StopReading, mib, why_unreadable
from .problem_codes import problem
from .sources import SUPPORTED_SUFFIXES, counted_chunks, skippable

# A zip's central directory is parsed whole by zipfile; no honest archive of max_files entries needs more.
MAX_ZIP_DIRECTORY = 64 * MiB

Row = TypeVar("Row")


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts and not (p.parts and ":" in p.parts[0])


def _zip_directory(fh, name: str, limits: Limits) -> None:
    """Refuse an archive whose central directory is too big to parse, before zipfile parses it."""
    try:
        end = zipfile._EndRecData(fh)  # the end-of-directory record (zip64 aware); stable since Python 2
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FileProblem(problem("not_a_zip", file=name, reason=why_unreadable(exc))) from None
    if not end:
        raise FileProblem(problem("not_a_zip", file=name, reason="File is not a zip file"))
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > limits.max_files:
        raise FileProblem(_too_many_entries(entries, name, limits))
    if size > MAX_ZIP_DIRECTORY:
        raise FileProblem(problem("zip_directory_too_large", file=name, size=mib(size)))


def _too_many_entries(entries: int, name: str, limits: Limits) -> Problem:
    return problem(
        "zip_too_many_entries", file=name, count=entries, max=limits.max_files, env=env_name("max_files")
    )


def _open_zip(fh, name: str, limits: Limits) -> zipfile.ZipFile:
    """The archive, its directory checked before and after zipfile parses it: zipfile reads the
    directory by its size, not by the entry count the end record claims (5 claimed, 60,000 held), so
    the entries are counted again as parsed."""
    _zip_directory(fh, name, limits)
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        # a non-UTF-8 name flagged UTF-8 raises UnicodeDecodeError, a ValueError
        raise FileProblem(problem("not_a_zip", file=name, reason=why_unreadable(exc))) from None
    entries = len(zf.infolist())
    if entries > limits.max_files:
        zf.close()
        raise FileProblem(_too_many_entries(entries, name, limits))
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
    return problem("zip_method", file=where, method=method)


# ------------------------------------------------------------------------------------- a dataset zip


def zip_rows(
    fh, name: str, limits: Limits, sink: Sink, member_rows: Callable[[object, str], Iterator[Row]]
) -> Iterator[Row]:
    """The rows of each data file of a dataset zip, in name order: ``member_rows(open member, its name)``
    reads one; the archive's problems and each refused member's go to the sink."""
    with _open_zip(fh, name, limits) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        unsafe = [m.filename for m in members if not _safe_member(m.filename)]
        for member in unsafe:
            sink.error(problem("zip_outside", file=f"{name}:{member}"))
        if unsafe:
            return
        declared = sum(m.file_size for m in members)
        if declared > limits.max_bytes:
            sink.error(
                problem(
                    "zip_unpacks_over",
                    file=name,
                    size=mib(declared),
                    max=mib(limits.max_bytes),
                    env=env_name("max_dataset_mb"),
                )  # fmt: skip
            )
            return
        for m in sorted(members, key=lambda m: m.filename):
            p = PurePosixPath(m.filename)
            if skippable(p.parts):
                continue
            where = f"{name}:{m.filename}"
            if p.suffix.lower() not in SUPPORTED_SUFFIXES:
                sink.warning(problem("zip_ignored", file=where))
                continue
            if stat.S_ISLNK(m.external_attr >> 16):
                sink.error(problem("zip_symlink", file=where))
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
                sink.error(problem("unreadable", file=where, reason=why_unreadable(exc)))
                continue
            with member:
                yield from member_rows(member, m.filename)


# ------------------------------------------------------------------------------------ a code upload


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
                problem("zip_file_and_folder", file=f"{name}:{m.filename}", entry=repr(m.filename))
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
                raise FileProblem(problem("zip_outside_code", file=where))
            if stat.S_ISLNK(m.external_attr >> 16):
                raise FileProblem(problem("zip_symlink", file=where))
            method = _method_problem(m, where)
            if method is not None and not m.is_dir():
                raise FileProblem(method)
        _file_and_folder(members, name)
        if sum(m.file_size for m in members) > limits.max_bytes:
            raise FileProblem(
                problem(
                    "zip_unpacks_more", file=name, max=mib(limits.max_bytes), env=env_name("max_dataset_mb")
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
                    for chunk in counted_chunks(src, where, budget):
                        out.write(chunk)
            except StopReading as exc:
                raise FileProblem(exc.problem) from None
            except FileExistsError:
                raise FileProblem(problem("zip_entry_twice", file=where)) from None
            except (*READ_ERRORS, ValueError) as exc:
                raise FileProblem(problem("unreadable", file=where, reason=why_unreadable(exc))) from None
            mode = (m.external_attr >> 16) & 0o777
            if mode & 0o100:  # keep the executable bit of scripts (run.sh)
                target.chmod(0o755)
            count += 1
    return count
