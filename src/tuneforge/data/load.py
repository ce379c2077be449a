"""Read a dataset path into canonical records, collecting every problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError, DataError, Problem
from tuneforge.settings import get_settings

from .formats import FORMATS, apply_mapping, convert_rows, detect_format, parse_mapping
from .readers import read_rows


@dataclass
class LoadedDataset:
    path: Path
    format: str | None
    kind: str | None
    records: list[dict] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.records)

    def raise_for_errors(self) -> None:
        if self.errors:
            shown = "\n  ".join(str(p) for p in self.errors[:20])
            more = f"\n  … and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
            raise DataError(f"{self.path}: {len(self.errors)} problem(s):\n  {shown}{more}", self.errors)


def _checks(records: list[dict], kind: str, warnings: list[Problem]) -> None:
    """Problems that do not stop training but a person should know about."""
    empty = [
        i
        for i, r in enumerate(records)
        if kind == "chat"
        and any(m["role"] == "assistant" and not m["content"].strip() for m in r["messages"])
    ]
    if empty:
        warnings.append(
            Problem(
                f"{len(empty)} record(s) have an empty assistant answer (first: record "
                f"{empty[0]}); they teach the model to answer with nothing."
            )
        )
    if kind == "chat":
        odd = [i for i, r in enumerate(records) if _not_alternating(r["messages"])]
        if odd:
            warnings.append(
                Problem(
                    f"{len(odd)} record(s) do not alternate user/assistant turns (first: "
                    f"record {odd[0]}); some chat templates reject that."
                )
            )
    seen: set[str] = set()
    dupes = 0
    for r in records:
        key = repr(r)
        dupes += key in seen
        seen.add(key)
    if dupes:
        warnings.append(Problem(f"{dupes} duplicate record(s)."))


def _not_alternating(messages: list[dict]) -> bool:
    roles = [m["role"] for m in messages if m["role"] in ("user", "assistant")]
    return any(a == b for a, b in zip(roles, roles[1:], strict=False)) or (roles and roles[0] != "user")


def load_records(
    path: str | Path, fmt: str | None = None, mapping: str | dict | None = None, max_bytes: int | None = None
) -> LoadedDataset:
    """Read, detect, map and convert; never raises for bad content (see ``raise_for_errors``)."""
    path = Path(path)
    limit = max_bytes if max_bytes is not None else get_settings().max_dataset_mb * 2**20
    raw = read_rows(path, limit)
    out = LoadedDataset(path, None, None, errors=raw.errors, warnings=raw.warnings, files=raw.files)
    if not raw.rows:
        return out
    mapping = parse_mapping(mapping)
    out.errors += apply_mapping(raw.rows, mapping)
    if fmt and fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if not fmt:
        try:
            fmt = detect_format(raw.rows)
        except ConfigError as exc:
            out.errors.append(Problem(str(exc), file=path.name))
            return out
    out.format, out.kind = fmt, FORMATS[fmt].kind
    out.records = convert_rows(raw.rows, FORMATS[fmt], out.errors)
    if not out.records and not out.errors:
        out.errors.append(Problem("no records: the dataset is empty.", file=path.name))
    _checks(out.records, out.kind, out.warnings)
    return out
