"""Dataset validation report: format, counts, problems, token statistics and a masked preview."""

from __future__ import annotations

from dataclasses import dataclass, field

from .load import LoadedDataset
from .tokenize import IGNORE_INDEX, tokenize_record


def _summary(values: list[int]) -> dict:
    if not values:
        return {"count": 0}
    s = sorted(values)
    return {
        "count": len(s),
        "min": s[0],
        "median": s[len(s) // 2],
        "p95": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
        "max": s[-1],
        "total": sum(s),
    }


@dataclass
class ValidationReport:
    loaded: LoadedDataset
    stats: dict = field(default_factory=dict)
    previews: list[list[tuple[str, bool]]] = field(default_factory=list)  # (text, trained) pieces

    def to_dict(self) -> dict:
        return {
            "path": str(self.loaded.path),
            "format": self.loaded.format,
            "kind": self.loaded.kind,
            "records": len(self.loaded.records),
            "valid": self.loaded.ok,
            "errors": [p.to_dict() for p in self.loaded.errors],
            "warnings": [p.to_dict() for p in self.loaded.warnings],
            "stats": self.stats,
        }


def _role_lengths(records: list[dict], count) -> dict[str, list[int]]:
    per_role: dict[str, list[int]] = {}
    for r in records:
        if "text" in r:
            per_role.setdefault("text", []).append(count(r["text"]))
            continue
        messages = r.get("messages") or r["prompt"] + r["chosen"]
        for m in messages:
            per_role.setdefault(m["role"], []).append(count(m["content"]))
        if "rejected" in r:
            for m in r["rejected"]:
                per_role.setdefault("rejected", []).append(count(m["content"]))
    return per_role


def _pieces(tokenizer, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Merge runs of trained / untrained tokens into text pieces for display."""
    pieces: list[tuple[str, bool]] = []
    run: list[int] = []
    state = None
    for tok, lab in zip(ids, labels, strict=True):
        trained = lab != IGNORE_INDEX
        if state is not None and trained != state:
            pieces.append((tokenizer.decode(run), state))
            run = []
        run.append(tok)
        state = trained
    if run:
        pieces.append((tokenizer.decode(run), bool(state)))
    return pieces


def build_report(
    loaded: LoadedDataset,
    tokenizer=None,
    template: str | None = None,
    max_len: int = 1024,
    preview: int = 2,
    mask_mode: str = "assistant",
    progress=None,
) -> ValidationReport:
    """``progress(done, total)``, when given, is called as records are tokenized (large datasets)."""
    report = ValidationReport(loaded)
    records = loaded.records
    if not records:
        return report
    if tokenizer is None:
        report.stats = {
            "unit": "characters",
            "per_role": {k: _summary(v) for k, v in _role_lengths(records, len).items()},
        }
        return report

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    seq_lens, trained, over = [], 0, 0
    for i, r in enumerate(records):
        if progress and i % 200 == 0:
            progress(i, len(records))
        tok = tokenize_record(tokenizer, template, r, None, mask_mode)
        seq_lens.append(len(tok.input_ids))
        trained += tok.trained
        over += len(tok.input_ids) > max_len
        if i < preview:
            report.previews.append(_pieces(tokenizer, tok.input_ids, tok.labels))
    report.stats = {
        "unit": "tokens",
        "per_role": {k: _summary(v) for k, v in _role_lengths(records, count).items()},
        "sequence": _summary(seq_lens),
        "trained_tokens": trained,
        "max_len": max_len,
        "over_max_len": over,
    }
    return report
