"""What one dataset may make the readers do, and how what it cannot do is reported.

A dataset may come from anyone (an HTTP upload), so records, record length, nesting depth, number size,
files, bytes and problems are bounded by settings (``Limits``), each bound naming the setting that
raises it. ``Budget`` counts bytes, records and files over the whole dataset as they are read (never as
a file or an archive declares them); ``Sink`` collects problems, bounded too. A bound of the whole
dataset stops reading (``StopReading``); a file that cannot be read further raises ``FileProblem`` and
the next file is read. Byte sources, JSON, archives, Parquet and the Reader all build on this module.
"""

from __future__ import annotations

import lzma
import reprlib
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.errors import Problem
from tuneforge.settings import env_name, get_settings

from .problem_codes import problem

CHUNK = 1 << 20
MiB = 2**20
# A table this wide is not a dataset (a 2.3 MB zip of a 1M-column CSV took minutes); records use a few.
MAX_COLUMNS = 10_000


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


def mib(n: int) -> str:
    """A size for a message: ``7.5 MiB``."""
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
            raise StopReading(too_many_problems(len(self.errors)))

    def warning(self, problem: Problem) -> None:
        if len(self.warnings) < self.limits.max_problems:
            self.warnings.append(problem)


def too_many_columns(n: int, name: str) -> Problem:
    return problem("too_many_columns", file=name, count=f"{n:,}", max=f"{MAX_COLUMNS:,}")


def too_many_problems(n: int) -> Problem:
    return problem("too_many_problems", count=n, env=env_name("max_problems"))


def too_long(name: str, line: int | None, limits: Limits, what: str = "line") -> Problem:
    """``what`` (line, record, CSV row, CSV field) is longer than a record may be."""
    code = what.lower().replace(" ", "_") + "_too_long"
    return problem(
        code, file=name, line=line, max=mib(limits.max_record_bytes), env=env_name("max_record_mb")
    )


class Budget:
    """Running totals over the whole dataset, checked as bytes and records are read."""

    def __init__(self, limits: Limits, total_hint: int = 0, progress: Callable | None = None):
        self.limits, self.read, self.records, self.files = limits, 0, 0, 0
        self.total_hint, self.progress = total_hint, progress

    def take_bytes(self, n: int, where: str) -> None:
        self.read += n
        if self.read > self.limits.max_bytes:
            raise StopReading(
                problem(
                    "data_over_limit",
                    file=where,
                    max=mib(self.limits.max_bytes),
                    env=env_name("max_dataset_mb"),
                )
            )
        if self.progress is not None:
            self.progress(self.read, max(self.read, self.total_hint))

    def take_record(self, where: str) -> None:
        self.records += 1
        if self.records > self.limits.max_records:
            raise StopReading(
                problem(
                    "too_many_records", file=where, max=self.limits.max_records, env=env_name("max_records")
                )
            )

    def take_file(self, where: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise StopReading(
                problem("too_many_files", file=where, max=self.limits.max_files, env=env_name("max_files"))
            )


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4


def short(value) -> str:
    """A user-supplied value for a message: repr'd and cut, so a huge or deep value stays one line."""
    return _SHORT.repr(value)


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


def why_unreadable(exc: BaseException) -> str:
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
