"""Read a dataset path into canonical records, collecting every problem.

``scan_records`` streams: records are handed to a callback one at a time and only running checks are
kept, so validating or storing a dataset takes bounded memory whatever its size. ``load_records``
keeps the records (training needs them all).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError, DataError, Problem

from .formats import (
    FORMATS,
    convert_row,
    detect_from,
    map_row,
    missing_columns,
    parse_mapping,
    row_signature,
    undetected_params,
)
from .limits import Limits, short, too_many_problems
from .problem_codes import problem
from .readers import iter_rows
from .records import RecordProblems

log = logging.getLogger(__name__)

DETECT_ROWS = 200  # records sampled to detect the format
KEYS_SHOWN_ROWS = 50  # records whose keys an error about detection lists


class RecordError(DataError):
    """Raised by an ``on_record`` callback for a record it cannot use (a chat template that refuses
    it, say); ``scan_records`` reports it at the record's file, line and number, as the problem
    ``code`` (data/problem_codes.py) with its ``params``."""

    def __init__(self, code: str, field: str | None = None, **params):
        super().__init__(problem(code, **params).message)
        self.code, self.field, self.params = code, field, params


@dataclass
class LoadedDataset:
    path: Path
    format: str | None
    kind: str | None
    records: list[dict] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    count: int | None = None  # records that passed, when they were streamed rather than kept

    @property
    def n_records(self) -> int:
        return self.count if self.count is not None else len(self.records)

    @property
    def ok(self) -> bool:
        return not self.errors and self.n_records > 0

    def raise_for_errors(self) -> None:
        if self.errors:
            shown = "\n  ".join(str(p) for p in self.errors[:20])
            more = f"\n  … and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
            raise DataError(f"{self.path}: {len(self.errors)} problem(s):\n  {shown}{more}", self.errors)


class RecordChecks:
    """Problems that do not stop training but a person should know about, counted as records stream
    by: memory stays constant whatever the records hold. (Duplicates are the validation's: dedup.py.)"""

    def __init__(self):
        self.index = 0
        self.empty: list[int] = []  # [count, first]
        self.odd: list[int] = []
        self.same_pair: list[int] = []
        self.numbers = 0
        self.first_number: Problem | None = None

    @staticmethod
    def _note(slot: list[int], i: int) -> None:
        if slot:
            slot[0] += 1
        else:
            slot += [1, i]

    def add(self, record: dict, probs: RecordProblems | None = None) -> None:
        i = self.index + 1  # a person's record number, counted from 1 as lines are
        self.index += 1
        messages = record.get("messages")
        if messages is not None:
            if any(
                m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls")
                for m in messages
            ):
                self._note(self.empty, i)
            if _not_alternating(messages):
                self._note(self.odd, i)
        if "chosen" in record and record["chosen"] == record["rejected"]:
            self._note(self.same_pair, i)
        if probs is not None and probs.numbers:
            self.numbers += len(probs.numbers)
            if self.first_number is None:
                self.first_number = probs.at(probs.numbers[0], "numbers_as_text", count=1)

    def warnings(self) -> list[Problem]:
        out = []
        for code, slot in (("empty_answers", self.empty), ("not_alternating", self.odd),
                           ("same_answers", self.same_pair)):  # fmt: skip
            if slot:
                out.append(problem(code, count=slot[0], first=slot[1]))
        if self.numbers and self.first_number is not None:
            # located at the first number: its file, line, record and field say where it is
            first = self.first_number
            out.append(problem("numbers_as_text", file=first.file, line=first.line, record=first.record,
                               field=first.field, count=self.numbers))  # fmt: skip
        return out


def _not_alternating(messages: list[dict]) -> bool:
    """Whether user and assistant turns fail to alternate, starting with the user. A tool call's round
    trip (assistant with tool_calls → tool results → assistant) is one assistant turn."""
    roles: list[str] = []
    after_tool = False
    for m in messages:
        role = m["role"]
        if role == "tool":
            after_tool = True
            continue
        if role not in ("user", "assistant"):
            continue
        if not (role == "assistant" and after_tool and roles and roles[-1] == "assistant"):
            roles.append(role)
        after_tool = False
    return any(a == b for a, b in zip(roles, roles[1:], strict=False)) or bool(roles and roles[0] != "user")


def _detect(path: Path, mapping: dict, limits: Limits) -> tuple[str | None, Problem | None, set]:
    """(format, problem, some column names) from the first records; the sample is read and dropped
    (a second, short read) so nothing is held while the whole dataset streams."""
    votes: Counter = Counter()
    keys: set = set()
    rows = iter_rows(path, limits, [], [])
    for n, row in enumerate(rows):
        data = map_row(row.data, mapping)
        votes[row_signature(data)] += 1
        if n < KEYS_SHOWN_ROWS and len(keys) < 1000:
            keys.update(list(row.data)[:100])
        if n + 1 >= DETECT_ROWS:
            break
    rows.close()
    if not votes:
        return None, None, keys
    try:
        return detect_from(votes, keys), None, keys
    except ConfigError:
        return None, problem("format_undetected", file=path.name, **undetected_params(keys)), keys


def scan_records(
    path: str | Path,
    fmt: str | None = None,
    mapping: str | dict | None = None,
    on_record: Callable[[dict], None] | None = None,
    max_bytes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LoadedDataset:
    """Read, detect, map and convert, handing each valid canonical record to ``on_record`` (which may
    raise RecordError to refuse it); never raises for bad content (see
    ``LoadedDataset.raise_for_errors``). Keeps no records itself. A bad ``fmt`` or ``mapping`` is a
    ConfigError, raised before anything is read."""
    path = Path(path)
    mapping = parse_mapping(mapping)
    if fmt and fmt not in FORMATS:
        raise ConfigError(f"unknown format {short(fmt)}; use one of {', '.join(FORMATS)}.")
    limits = Limits.from_settings(max_bytes)
    out = LoadedDataset(path, None, None, count=0)
    detect_problem, columns = None, set()
    if not fmt:
        fmt, detect_problem, columns = _detect(path, mapping, limits)
    spec = FORMATS[fmt] if fmt else None
    if spec is not None:
        out.format, out.kind = spec.name, spec.kind
    checks = RecordChecks()
    seen_columns: set[str] = set()
    wanted = set(mapping.values())
    rows = 0
    reading = iter_rows(path, limits, out.errors, out.warnings, out.files, progress)
    for row in reading:
        rows += 1
        if wanted - seen_columns:
            seen_columns.update(c for c in wanted if c in row.data)
        if len(columns) < 1000 and rows <= KEYS_SHOWN_ROWS:
            columns.update(list(row.data)[:100])
        if spec is None:
            continue
        probs = RecordProblems(row, out.errors)
        row.data = map_row(row.data, mapping)
        record = convert_row(row, spec, probs)
        if record is not None and on_record is not None:
            try:
                on_record(record)
            except RecordError as exc:  # what the consumer found wrong with this record, located here
                probs.add(exc.field, exc.code, **exc.params)
                record = None
        if record is not None:
            checks.add(record, probs)
            out.count += 1
        if len(out.errors) >= limits.max_problems:
            reading.close()
            out.errors.append(too_many_problems(len(out.errors)))
            break
    if rows and mapping:
        out.errors[:0] = missing_columns(mapping, seen_columns, columns)
    if detect_problem is not None:
        out.errors.append(detect_problem)
    if not out.errors and not out.count:
        out.errors.append(problem("empty_dataset", file=path.name))
    out.warnings += checks.warnings()
    return out


def load_records(
    path: str | Path, fmt: str | None = None, mapping: str | dict | None = None, max_bytes: int | None = None
) -> LoadedDataset:
    """Read, detect, map and convert, keeping every record; never raises for bad content (see
    ``raise_for_errors``)."""
    records: list[dict] = []
    out = scan_records(path, fmt, mapping, records.append, max_bytes)
    out.records, out.count = records, None
    return out
