"""Dataset validation report: format, counts, problems, token statistics and a masked preview.

``validate_path`` streams a dataset twice at most: once to read and check it (character statistics),
and, when it is valid and a tokenizer is wanted, once more to count tokens. Lengths are kept as
counts of each length, so memory does not grow with the number of records. With a tokenizer, the
duplicate signatures are made in the second read, while the workers tokenize, and checked in a thread
while they count the last chunks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .lengths import histogram, summary_counts
from .load import LoadedDataset, RecordError, scan_records
from .problem_codes import problem
from .records import record_texts, record_turns
from .stats_pool import Chunk, pool_for, refuse_callback
from .tokenize import IGNORE_INDEX, tokenize_record
from .tokenize_batch import count_tokens_many, tokenize_counting_turns


@dataclass
class ValidationReport:
    loaded: LoadedDataset
    stats: dict = field(default_factory=dict)
    previews: list[list[tuple[str, bool]]] = field(default_factory=list)  # (text, trained) pieces
    duplicates: dict | None = None  # DuplicateFinder.report() of a valid dataset
    eval_overlap: dict | None = None  # DuplicateFinder.overlap() with the evaluation set, when one is given

    def to_dict(self) -> dict:
        return {
            "path": str(self.loaded.path),
            "format": self.loaded.format,
            "kind": self.loaded.kind,
            "records": self.loaded.n_records,
            "valid": self.loaded.ok,
            "errors": [p.to_dict() for p in self.loaded.errors],
            "warnings": [p.to_dict() for p in self.loaded.warnings],
            "stats": self.stats,
            **({"duplicates": self.duplicates} if self.duplicates is not None else {}),
            **({"eval_overlap": self.eval_overlap} if self.eval_overlap is not None else {}),
        }


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


def _role_texts(record: dict) -> list[tuple[str, str]]:
    """(role, text) of each text of a record: its conversation's turns, then a preference pair's rejected
    answer; raw text is one "text" turn."""
    if "text" in record:
        return [("text", record["text"])]
    mine = [(m["role"], m["content"]) for m in record_turns(record)]
    return mine + [("rejected", m["content"]) for m in record.get("rejected", ())]


# A record longer than this (in characters, and than 8 × max_len) is measured turn by turn, not
# rendered and tokenized whole with offsets: that would take about 100 bytes a token.
LONG_RECORD_CHARS = 256 * 1024
SLICE_CHARS = 64 * 1024


class StatsBuilder:
    """Length statistics accumulated record by record: characters without a tokenizer, tokens with."""

    def __init__(self, tokenizer=None, template: str | None = None, max_len: int = 1024, preview: int = 2,
                 mask_mode: str = "assistant"):  # fmt: skip
        self.tokenizer, self.template, self.max_len = tokenizer, template, max_len
        self.preview, self.mask_mode = preview, mask_mode
        self.per_role: dict[str, Counter] = {}
        self.sequence: Counter = Counter()
        self.trained = self.over = self.seen = self.estimated = 0
        self.previews: list[list[tuple[str, bool]]] = []

    def fresh(self) -> StatsBuilder:
        """An empty builder with the same settings (a worker's, see stats_pool)."""
        return StatsBuilder(self.tokenizer, self.template, self.max_len, self.preview, self.mask_mode)

    def merge(self, other: StatsBuilder) -> None:
        """Add the counts of ``other``, which counted the records after this one's."""
        for role, counts in other.per_role.items():
            self.per_role.setdefault(role, Counter()).update(counts)
        self.sequence.update(other.sequence)
        self.trained += other.trained
        self.over += other.over
        self.estimated += other.estimated
        self.seen += other.seen
        self.previews += other.previews[: max(0, self.preview - len(self.previews))]

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text)
        # Slices bound the tokenizer's memory (a token costs ~100 bytes in flight); a token cut at a
        # slice edge counts twice, which is noise next to a length that needs slicing.
        return sum(
            len(self.tokenizer(text[i : i + SLICE_CHARS], add_special_tokens=False)["input_ids"])
            for i in range(0, len(text), SLICE_CHARS)
        )

    def _counts(self, texts: list[str]) -> list[int]:
        """``count`` of each text; the short ones (nearly all) in batch calls."""
        if self.tokenizer is None:
            return [len(t) for t in texts]
        short = iter(count_tokens_many(self.tokenizer, [t for t in texts if len(t) <= SLICE_CHARS]))
        return [next(short) if len(t) <= SLICE_CHARS else self.count(t) for t in texts]

    def add(self, record: dict) -> None:
        """Count one record; RecordError when the chat template refuses it."""
        for _, refusal in self.add_many([record]):
            raise refusal

    def add_many(self, records: list[dict]) -> list[tuple[int, RecordError]]:
        """Count records in order, as ``add`` one by one would; returns (index in ``records``, why) of each
        the chat template refuses (its turns are counted, its sequence is not)."""
        turns = [_role_texts(record) for record in records]
        if self.tokenizer is None:
            self._count_roles(turns, [None] * len(records))
            self.seen += len(records)
            return []
        whole = [
            i
            for i, r in enumerate(records)
            if sum(len(m) for m in record_texts(r)) <= max(LONG_RECORD_CHARS, 8 * self.max_len)
        ]
        results, lengths = self._tokenize([records[i] for i in whole])
        tokenized = dict(zip(whole, results, strict=True))
        known: list = [None] * len(records)
        for i, mine in zip(whole, lengths, strict=True):
            known[i] = mine
        per_record = self._count_roles(turns, known)
        refused = []
        for i, record in enumerate(records):
            tok = tokenized.get(i)
            if isinstance(tok, RecordError):
                refused.append((i, tok))
                continue
            if tok is None:
                # Far longer than any sequence trained on: the exact masked rendering would hold
                # millions of tokens with their offsets in memory. Its length is the sum of its
                # turns (the template's few tokens aside) and it is over max_len either way.
                counts_here = per_record[i]
                n = sum(c for _, c in counts_here)
                trained = n if "text" in record else sum(c for role, c in counts_here if role == "assistant")
                self.sequence[n] += 1
                self.trained += trained
                self.over += n > self.max_len
                self.estimated += 1
            else:
                self.sequence[tok.length] += 1
                self.trained += tok.trained
                self.over += tok.length > self.max_len
                if self.seen < self.preview:  # its ids and labels: the batch counted them only
                    tok = tokenize_record(self.tokenizer, self.template, record, None, self.mask_mode)
                    self.previews.append(_pieces(self.tokenizer, tok.input_ids, tok.labels))
            self.seen += 1
        return refused

    def _count_roles(self, turns: list[list[tuple[str, str]]], known: list) -> list[list[tuple[str, int]]]:
        """Add each turn's length to its role's counts; ``known[i]``: record i's turn lengths read off its
        tokenized conversation (None where a turn, or the whole record, must be counted alone). Returns
        each record's (role, length) of its conversation (a rejected answer is not in it)."""
        alone = [
            text
            for mine, lengths in zip(turns, known, strict=True)
            for k, (_, text) in enumerate(mine)
            if lengths is None or k >= len(lengths) or lengths[k] is None
        ]
        counted_alone = iter(self._counts(alone))
        per_record = []
        for mine, lengths in zip(turns, known, strict=True):
            counted = []
            for k, (role, _) in enumerate(mine):
                n = lengths[k] if lengths is not None and k < len(lengths) else None
                counted.append((role, next(counted_alone) if n is None else n))
            for role, n in counted:
                self.per_role.setdefault(role, Counter())[n] += 1
            per_record.append([(role, n) for role, n in counted if role != "rejected"])
        return per_record

    def _tokenize(self, records: list[dict]) -> tuple[list, list]:
        """Each record's Tokenized, or the RecordError saying why the chat template refuses it; and the
        lengths of its turns where its tokens gave them (``tokenize_counting_turns``)."""
        out = []
        results, lengths = tokenize_counting_turns(self.tokenizer, self.template, records, self.mask_mode)
        for result in results:
            if isinstance(result, Exception):
                reason = " ".join(str(result).split())[:300]
                result = RecordError("template_refuses", reason=reason)
            out.append(result)
        return out, lengths

    def stats(self) -> dict:
        if not self.seen:
            return {}
        per_role = {k: summary_counts(v) for k, v in self.per_role.items()}
        if self.tokenizer is None:
            return {"unit": "characters", "per_role": per_role}
        return {
            "unit": "tokens",
            "per_role": per_role,
            "sequence": summary_counts(self.sequence),
            "histogram": histogram(self.sequence),
            "trained_tokens": self.trained,
            "max_len": self.max_len,
            "over_max_len": self.over,
            **({"long_records_estimated": self.estimated} if self.estimated else {}),
        }


def build_report(
    loaded: LoadedDataset,
    tokenizer=None,
    template: str | None = None,
    max_len: int = 1024,
    preview: int = 2,
    mask_mode: str = "assistant",
    progress=None,
) -> ValidationReport:
    """The report of records already loaded (``validate_path``'s, duplicates included).
    ``progress(done, total)``, when given, is called as records are tokenized (large datasets)."""
    from .dedup import DuplicateFinder

    report = ValidationReport(loaded)
    builder = StatsBuilder(tokenizer, template, max_len, preview, mask_mode)
    dupes = DuplicateFinder()
    records = loaded.records
    pool = pool_for(builder, len(records))
    try:
        chunk = Chunk()
        for i, r in enumerate(records, start=1):
            dupes.add(r)
            if chunk.add(r) or i == len(records):
                if progress and tokenizer is not None:
                    progress(i - len(chunk.records), len(records))
                pool.submit(chunk.take())
        refused = pool.finish()
    finally:
        pool.close()
    for _, why in sorted(refused.items())[:1]:
        raise why
    report.stats, report.previews = builder.stats(), builder.previews
    if loaded.ok:
        check_duplicates(report, dupes, None, None, None, None)
    return report


def validate_path(
    path: str | Path,
    fmt: str | None = None,
    mapping: str | dict | None = None,
    tokenizer_loader: Callable[[], tuple[object, str | None] | None] | None = None,
    max_len: int = 1024,
    preview: int = 2,
    mask_mode: str = "assistant",
    progress: Callable[[str, int, int], None] | None = None,
    max_bytes: int | None = None,
    jaccard: float | None = None,
    eval_path: str | Path | None = None,
) -> ValidationReport:
    """Validate a dataset path in bounded memory, keeping no records; with the duplicates inside it
    (exact, and near at ``jaccard``, default dedup.DEFAULT_JACCARD) and, given ``eval_path`` (read with
    the same format and mapping), how much of that evaluation set is in it.

    ``tokenizer_loader()`` returns ``(tokenizer, chat_template)`` or None; it is called only when the
    dataset is valid, and a valid dataset is then read a second time to count tokens (and make the
    duplicate signatures: a loader that returns None costs that read; pass None when none will come).
    ``progress(stage, done, total)`` reports stage "read" in bytes, then "tokenize" in records.
    A bad ``fmt`` or ``mapping`` raises ConfigError before anything is read.
    """
    from .dedup import DuplicateFinder  # numpy: imported when a dataset is checked

    chars = StatsBuilder()
    dupes = DuplicateFinder(jaccard)  # a bad threshold is refused before anything is read
    # With a tokenizer to come, the duplicate check's signatures are made in the second read, where the
    # workers tokenize on the other cores, not in the first, which has one core to itself (they were
    # 3 of its 4.5 CPU-s on 52,000 records); an invalid dataset gets no duplicate check either way. An
    # evaluation set's reading problems make the dataset invalid, so with one that check comes first.
    beside = tokenizer_loader is not None and eval_path is None

    def first_read(record: dict) -> None:
        chars.add(record)
        if not beside:
            dupes.add(record)

    read_progress = (lambda done, total: progress("read", done, total)) if progress else None
    loaded = scan_records(path, fmt, mapping, first_read, max_bytes, read_progress)
    report = ValidationReport(loaded, chars.stats())

    def duplicates() -> None:
        check_duplicates(report, dupes, eval_path, fmt, mapping, max_bytes)

    if loaded.ok and not beside:
        duplicates()
    loaded_tokenizer = tokenizer_loader() if loaded.ok and tokenizer_loader is not None else None
    if loaded_tokenizer is None:
        if loaded.ok and beside:  # no tokenizer after all: the signatures are read for themselves
            scan_records(path, loaded.format, mapping, dupes.add, max_bytes)
            duplicates()
        return report
    tokenizer, template = loaded_tokenizer
    tokens = StatsBuilder(tokenizer, template, max_len, preview, mask_mode)
    total = loaded.n_records
    pending = Chunk()
    pool = pool_for(tokens, total)

    def flush() -> None:
        if progress:
            progress("tokenize", pool.streamed, total)
        pool.submit(pending.take())

    def add(record: dict) -> None:
        if beside:
            dupes.add(record)
        if pending.add(record):
            flush()

    # The same bytes again: their reading problems were all reported by the first read; what is new is
    # a record the chat template refuses.
    try:
        again = scan_records(path, loaded.format, mapping, add, max_bytes)
        flush()
        if beside:  # while the workers count the last chunks
            pool.run_beside(duplicates)
        refused = pool.finish()  # the number of a record in the stream → why the template refuses it
    finally:
        pool.close()
    loaded.errors += again.errors
    if refused and not again.errors:
        # Records are tokenized in batches, after the reader has moved on: a third read locates the
        # refused ones (file, line, record) as the reader reports any problem; only when there are some.
        located = scan_records(path, loaded.format, mapping, refuse_callback(refused), max_bytes)
        loaded.errors += located.errors
    report.stats, report.previews = tokens.stats(), tokens.previews
    return report


def check_duplicates(report: ValidationReport, dupes, eval_path, fmt, mapping, max_bytes) -> None:
    """The duplicate report and its warnings; with an evaluation set, its overlap (its reading problems
    are the report's errors)."""
    from .dedup import Signatures, duplicate_warnings, overlap_params

    loaded = report.loaded
    report.duplicates = dupes.report()
    loaded.warnings += duplicate_warnings(report.duplicates)
    if eval_path is None:
        return
    evaluation = Signatures()
    read = scan_records(eval_path, fmt or loaded.format, mapping, evaluation.add, max_bytes)
    loaded.errors += read.errors
    if read.ok:
        report.eval_overlap = dupes.overlap(evaluation)
        if report.eval_overlap["overlapping"]:
            where = Path(eval_path).name
            loaded.warnings.append(problem("eval_overlap", file=where, **overlap_params(report.eval_overlap)))
