"""Parquet rows, streamed in small batches with the decoded bytes counted against the dataset budget.

What a hostile Parquet file can do, and what stops it here:
- a dictionary-encoded column expands far beyond the file's size (643 KB → 2.3 GB): rows are decoded
  64 at a time and each batch's decoded size is counted before it becomes Python objects;
  (the budget counts decoded bytes, never the file's size or its declared sizes);
- timestamps and dates outside Python's datetime range raise OverflowError in ``to_pylist``: top-level
  temporal columns are turned into strings by Arrow first, anything else becomes a located problem;
- Arrow's worker threads, torn down at interpreter exit while still running, abort the process (exit
  134) after its output was printed: everything is read on the calling thread (``use_threads=False``,
  ``pre_buffer=False``), so no Arrow pool is started;
- a footer declaring millions of columns or deep nesting: Thrift sizes and the schema depth are bounded;
- a page of repeated bytes that decompresses 20,000-fold (a 70 KB file holding 1.5 GB), in several
  columns at once: Arrow decodes whole pages, one per column, before any batch can be counted, so the
  page headers are read first (parquet_pages.py) and a file whose pages would be held at once beyond
  ``MAX_PAGES_HELD``, or whose pages decode beyond the dataset budget, is refused before decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from tuneforge.errors import Problem
from tuneforge.settings import env_name

from .parquet_pages import BadPages, ForwardReader, TooManyPages, WalkBudget, chunk_pages, read_footer
from .readers import CHUNK, Budget, FileProblem, Limits, _mib

log = logging.getLogger(__name__)

BATCH_ROWS = 64
# Decoded pages Arrow holds at once (the largest page of every column of a row group, and its
# dictionary). Writers' defaults are 1 MiB pages (pyarrow, pandas, Spark, DuckDB); 256 MiB is room for
# wide tables and long texts, far from what a decompression bomb needs.
MAX_PAGES_HELD = 256 * 2**20


def _chunks(source, name: str) -> tuple[int, list[tuple[int, int, int]]]:
    """(column count, [(row group, start, length)] in file order) of every column chunk, from the footer
    read by our own reader (see parquet_pages), checked before any is read: one chunk per column, inside
    the file, none overlapping another (a footer could point a million chunks at the same bytes)."""
    footer = read_footer(source)
    source.seek(0, 2)
    size = source.tell()
    chunks = []
    for g, ranges in enumerate(footer.groups):
        if len(ranges) != footer.leaves:
            raise FileProblem(
                Problem(
                    f"row group {g} lists {len(ranges)} column chunks for {footer.leaves} columns: a "
                    "damaged footer.",
                    file=name,
                )
            )
        for c, (start, length) in enumerate(ranges):
            if start < 4 or length < 0 or start + length > size:
                raise BadPages(f"row group {g} column {c}: its pages lie outside the file")
            chunks.append((g, start, length))
    chunks.sort(key=lambda ch: (ch[1], ch[1] + ch[2]))
    for (_g, a, a_len), (_h, b, _b_len) in zip(chunks, chunks[1:], strict=False):
        if b < a + a_len:
            raise BadPages("two column chunks share the same bytes")
    return len(footer.groups), chunks


def _check_pages(source, name: str, limits: Limits, budget: Budget) -> None:
    groups, chunks = _chunks(source, name)
    reader, walk = ForwardReader(source), WalkBudget()
    total, held = 0, [0] * groups
    for g, start, length in chunks:
        pages = chunk_pages(reader, start, length, walk)
        held[g] += pages.largest + pages.dictionary
        total += pages.total
        if held[g] > MAX_PAGES_HELD:
            raise FileProblem(
                Problem(
                    f"row group {g}: its pages decode to {held[g] / 2**20:,.0f} MiB held at once (the "
                    f"largest page of each column), more than {_mib(MAX_PAGES_HELD)}. Write the file with "
                    "smaller pages (pyarrow's default data_page_size of 1 MiB is fine) or fewer columns.",
                    file=name,
                )
            )
        if budget.read + total > limits.max_bytes:
            raise FileProblem(
                Problem(
                    f"its pages decode to more than the {_mib(limits.max_bytes)} a dataset may hold "
                    f"({env_name('max_dataset_mb')}).",
                    file=name,
                )
            )
    source.seek(0)


def _depth(arrow_type) -> int:
    import pyarrow as pa

    stack, deepest = [(arrow_type, 1)], 0
    while stack:
        t, d = stack.pop()
        deepest = max(deepest, d)
        if pa.types.is_struct(t):
            stack.extend((t.field(i).type, d + 1) for i in range(t.num_fields))
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            stack.append((t.value_type, d + 1))
        elif pa.types.is_map(t):
            stack.extend([(t.key_type, d + 1), (t.item_type, d + 1)])
    return deepest


def _plain(batch):
    """The batch with dictionary columns decoded (so its size is what its rows hold: a dictionary
    bomb is counted as what it expands to) and top-level timestamp/date/time/duration columns as ISO
    strings (Arrow formats any year; Python's datetime stops at 9999)."""
    import pyarrow as pa

    columns, changed = [], False
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            column, changed = column.dictionary_decode(), True
        if pa.types.is_temporal(column.type):
            column, changed = column.cast(pa.string()), True
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names) if changed else batch


def iter_parquet_rows(source, name: str, limits: Limits, budget: Budget) -> Iterator[dict]:
    """The rows of a Parquet file (an open, seekable binary file) as dicts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Our own read of the footer and the page headers comes first: pyarrow can abort the process on a
    # crafted footer, and allocates what the page headers declare.
    try:
        _check_pages(source, name, limits, budget)
    except TooManyPages as exc:
        raise FileProblem(Problem(f"refused: {_message(exc)}.", file=name)) from None
    except (BadPages, OSError, ValueError) as exc:
        raise FileProblem(Problem(f"not a readable Parquet file: {_message(exc)}", file=name)) from None
    try:
        pf = pq.ParquetFile(
            source,
            buffer_size=CHUNK,
            pre_buffer=False,
            thrift_string_size_limit=limits.max_record_bytes,
            thrift_container_size_limit=max(limits.max_files, 100_000),
        )
        meta = pf.metadata
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError, TypeError, EOFError) as exc:
        raise FileProblem(Problem(f"not a readable Parquet file: {_message(exc)}", file=name)) from None
    if meta.num_rows > limits.max_records:
        raise FileProblem(
            Problem(
                f"holds {meta.num_rows} rows: over the limit of {limits.max_records} "
                f"({env_name('max_records')}).",
                file=name,
            )
        )
    deepest = max((_depth(f.type) for f in schema), default=0)
    if deepest > limits.max_depth:
        raise FileProblem(
            Problem(
                f"columns nested {deepest} deep: more than {limits.max_depth} ({env_name('max_depth')}).",
                file=name,
            )
        )
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            # Counted as decoded, before Python objects are made: a dictionary bomb stops here.
            batch = _plain(batch)
            budget.take_bytes(batch.nbytes, name)
            if batch.num_rows and batch.nbytes > limits.max_record_bytes * batch.num_rows:
                raise FileProblem(
                    Problem(
                        f"rows of more than {_mib(limits.max_record_bytes)} on average "
                        f"({env_name('max_record_mb')}).",
                        file=name,
                        record=index,
                    )
                )
            try:
                rows = batch.to_pylist()
            except (OverflowError, ValueError, pa.ArrowException) as exc:
                raise FileProblem(
                    Problem(
                        f"rows {index}–{index + batch.num_rows - 1} cannot be converted: {_message(exc)}",
                        file=name,
                        record=index,
                    )
                ) from None
            yield from rows
            index += batch.num_rows
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise FileProblem(
            Problem(f"not a readable Parquet file: {_message(exc)}", file=name, record=index)
        ) from None


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"
