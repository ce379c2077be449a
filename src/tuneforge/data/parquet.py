"""Parquet rows, streamed in small batches with the decoded bytes counted against the dataset budget.

What a hostile Parquet file can do, and what stops it here:
- a dictionary-encoded column expands far beyond the file's size (a 943-byte file of 320 rows sharing
  one 7.5 MiB string): top-level string columns with dictionary pages are read as Arrow dictionaries,
  a batch's decoded size is computed from the dictionary's value lengths and counted before anything
  is decoded, and rows are then decoded a few MiB at a time (``DECODE_BYTES``);
  (the budget counts decoded bytes, never the file's size or its declared sizes);
- timestamps and dates outside Python's datetime range raise OverflowError in ``to_pylist``: top-level
  temporal columns are turned into text by Arrow first (``TemporalText``, which formats refuse where
  text belongs); a value no calendar can write is a located problem naming its column and row;
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

from tuneforge.settings import env_name

from .limits import CHUNK, MAX_COLUMNS, Budget, FileProblem, Limits, mib, too_many_columns
from .parquet_pages import BadPages, ForwardReader, TooManyPages, WalkBudget, chunk_pages, read_footer
from .problem_codes import problem

log = logging.getLogger(__name__)

BATCH_ROWS = 64
# Decoded pages Arrow holds at once (the largest page of every column of a row group, and its
# dictionary). Writers' defaults are 1 MiB pages (pyarrow, pandas, Spark, DuckDB); 256 MiB is room for
# wide tables and long texts, far from what a decompression bomb needs.
MAX_PAGES_HELD = 256 * 2**20
# Dictionary-encoded rows are turned into Python objects this many bytes at a time (at least one row).
DECODE_BYTES = 16 * 2**20
# What Arrow writes, casting to string, for a timestamp or date no calendar can hold.
OUT_OF_RANGE = "<value out of range: "


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


def _chunks(source, name: str) -> tuple[int, list[tuple[int, int, int, int]]]:
    """(row group count, [(row group, start, length, column)] in file order) of every column chunk, from
    the footer read by our own reader (see parquet_pages), checked before any is read: one chunk per
    column, inside the file, none overlapping another (a footer could point a million chunks at the
    same bytes)."""
    footer = read_footer(source)
    source.seek(0, 2)
    size = source.tell()
    chunks = []
    for g, ranges in enumerate(footer.groups):
        if len(ranges) != footer.leaves:
            raise FileProblem(
                problem(
                    "parquet_damaged_footer", file=name, group=g, chunks=len(ranges), columns=footer.leaves
                )
            )
        for c, (start, length) in enumerate(ranges):
            if start < 4 or length < 0 or start + length > size:
                raise BadPages(f"row group {g} column {c}: its pages lie outside the file")
            chunks.append((g, start, length, c))
    chunks.sort(key=lambda ch: (ch[1], ch[1] + ch[2]))
    for (_g, a, a_len, _c), (_h, b, _b_len, _d) in zip(chunks, chunks[1:], strict=False):
        if b < a + a_len:
            raise BadPages("two column chunks share the same bytes")
    return len(footer.groups), chunks


def _check_pages(source, name: str, limits: Limits, budget: Budget) -> set[int]:
    """Refuse what the page headers say cannot be decoded within bounds; the leaf columns (by index)
    that hold a dictionary page, from the same walk (pyarrow's own metadata accessors can abort the
    process on a crafted footer)."""
    groups, chunks = _chunks(source, name)
    reader, walk = ForwardReader(source), WalkBudget()
    total, held, dictionaries = 0, [0] * groups, set()
    for g, start, length, column in chunks:
        pages = chunk_pages(reader, start, length, walk)
        if pages.dictionary:
            dictionaries.add(column)
        held[g] += pages.largest + pages.dictionary
        total += pages.total
        if held[g] > MAX_PAGES_HELD:
            size = f"{held[g] / 2**20:,.0f} MiB"
            raise FileProblem(
                problem("parquet_pages_held", file=name, group=g, size=size, max=mib(MAX_PAGES_HELD))
            )
        if budget.read + total > limits.max_bytes:
            raise FileProblem(
                problem(
                    "parquet_pages_too_large",
                    file=name,
                    max=mib(limits.max_bytes),
                    env=env_name("max_dataset_mb"),
                )
            )
    source.seek(0)
    return dictionaries


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


def _dictionary_paths(parquet_schema, with_dictionary: set[int]) -> list[str]:
    """Paths of the string/binary leaf columns written with a dictionary page in some row group, top
    level (``output``) or inside list/struct columns (``messages.list.element.content``): read as Arrow
    dictionaries, so what they expand to is known before it is decoded (320 rows sharing one 7.5 MiB
    string took 2 GB of a 10 KB file). One walk over the Parquet leaves, the same index the page walk
    found the dictionaries by; Arrow reads a named path that is no string/binary as it would anyway."""
    paths = []
    for leaf in sorted(with_dictionary):
        column = parquet_schema.column(leaf)
        if column.physical_type == "BYTE_ARRAY":
            paths.append(column.path)
    return paths


def _nested_dictionary_bytes(array) -> int:
    """Bytes the dictionary values inside a list/struct array decode to (0 without any)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = array.type
    if pa.types.is_dictionary(t):
        lengths = pc.binary_length(array.dictionary).cast(pa.int64())
        return pc.sum(pc.take(lengths, array.indices)).as_py() or 0
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _nested_dictionary_bytes(array.flatten())
    if pa.types.is_struct(t):
        return sum(_nested_dictionary_bytes(child) for child in array.flatten())
    return 0


def _has_dictionary(arrow_type) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return True
    return any(_has_dictionary(arrow_type.field(i).type) for i in range(arrow_type.num_fields))


def _decoded_sizes(batch):
    """(bytes of the batch once its dictionary columns are decoded, bytes each row's dictionary values
    take as a list or None without such columns), computed from the dictionaries' value lengths without
    decoding them."""
    import pyarrow as pa

    if not any(_has_dictionary(column.type) for column in batch.columns):
        return batch.nbytes, None
    import pyarrow.compute as pc

    # Sums in Python over at most BATCH_ROWS values: Arrow's fill_null(0) imports pandas (45 MB).
    total, per_row = 0, [0] * batch.num_rows
    for column in batch.columns:
        if not pa.types.is_dictionary(column.type) and _has_dictionary(column.type):
            sizes = [_nested_dictionary_bytes(column.slice(i, 1)) for i in range(batch.num_rows)]
            per_row = [held + size for held, size in zip(per_row, sizes, strict=True)]
            continue
        if not pa.types.is_dictionary(column.type):
            total += column.nbytes
            continue
        lengths = pc.binary_length(column.dictionary).cast(pa.int64())
        sizes = pc.take(lengths, column.indices).to_pylist()  # None for a null row
        per_row = [held + (size or 0) for held, size in zip(per_row, sizes, strict=True)]
        total += column.indices.nbytes
    return total + sum(per_row), per_row


def _slices(per_row, rows: int, limit: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of consecutive rows holding about ``limit`` bytes each, at least one row."""
    if per_row is None:
        yield 0, rows
        return
    start, held = 0, 0
    for i, size in enumerate(per_row):
        if i > start and held + size > limit:
            yield start, i - start
            start, held = i, 0
        held += size
    if start < len(per_row):
        yield start, len(per_row) - start


def _plain(batch, name: str, first_row: int):
    """The batch with dictionary columns decoded and top-level timestamp/date/time/duration columns
    as text (Arrow formats years Python's datetime cannot), with the names of those columns."""
    import pyarrow as pa

    columns, temporal, changed = [], {}, False
    for field_name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_dictionary(column.type):
            column, changed = column.dictionary_decode(), True
        if pa.types.is_temporal(column.type):
            kind = str(column.type)
            column, changed = column.cast(pa.string()), True
            import pyarrow.compute as pc

            bad = pc.starts_with(column, OUT_OF_RANGE).fill_null(False)
            if pc.any(bad).as_py():
                row = first_row + pc.index(bad, True).as_py()
                stored = column[row - first_row].as_py().removeprefix(OUT_OF_RANGE).rstrip(">")
                raise FileProblem(
                    problem(
                        "parquet_out_of_calendar",
                        file=name,
                        record=row + 1,
                        column=repr(field_name),
                        kind=kind,
                        value=stored,
                    )  # fmt: skip
                )
            temporal[field_name] = kind
        columns.append(column)
    batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names) if changed else batch
    return batch, temporal


def _rows(batch, temporal: dict[str, str]) -> list[dict]:
    rows = batch.to_pylist()
    for row in rows:
        for column, kind in temporal.items():
            if row[column] is not None:
                row[column] = TemporalText(row[column], column, kind)
    return rows


def iter_parquet_rows(source, name: str, limits: Limits, budget: Budget) -> Iterator[dict]:
    """The rows of a Parquet file (an open, seekable binary file) as dicts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Our own read of the footer and the page headers comes first: pyarrow can abort the process on a
    # crafted footer, and allocates what the page headers declare.
    try:
        with_dictionary = _check_pages(source, name, limits, budget)
    except TooManyPages as exc:
        raise FileProblem(problem("parquet_refused", file=name, reason=_message(exc))) from None
    except (BadPages, OSError, ValueError) as exc:
        raise FileProblem(problem("not_parquet", file=name, reason=_message(exc))) from None

    def open_file(read_dictionary=None):
        source.seek(0)
        return pq.ParquetFile(
            source,
            buffer_size=CHUNK,
            pre_buffer=False,
            read_dictionary=read_dictionary,
            thrift_string_size_limit=limits.max_record_bytes,
            thrift_container_size_limit=max(limits.max_files, 100_000),
        )

    try:
        pf = open_file()
        meta = pf.metadata
        schema = pf.schema_arrow
        if len(schema) > MAX_COLUMNS:
            raise FileProblem(too_many_columns(len(schema), name))
        dictionaries = _dictionary_paths(pf.schema, with_dictionary)
        if dictionaries:
            pf = open_file(dictionaries)
    except (pa.ArrowException, OSError, ValueError, TypeError, EOFError) as exc:
        raise FileProblem(problem("not_parquet", file=name, reason=_message(exc))) from None
    if meta.num_rows > limits.max_records:
        raise FileProblem(
            problem(
                "too_many_rows",
                file=name,
                count=meta.num_rows,
                max=limits.max_records,
                env=env_name("max_records"),
            )  # fmt: skip
        )
    deepest = max((_depth(f.type) for f in schema), default=0)
    if deepest > limits.max_depth:
        raise FileProblem(
            problem(
                "parquet_too_deep", file=name, depth=deepest, max=limits.max_depth, env=env_name("max_depth")
            )
        )
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            # Counted as it will be decoded, before it is: a dictionary bomb stops here.
            size, per_row = _decoded_sizes(batch)
            budget.take_bytes(size, name)
            if batch.num_rows and size > limits.max_record_bytes * batch.num_rows:
                raise FileProblem(
                    problem(
                        "parquet_rows_too_long",
                        file=name,
                        record=index + 1,
                        max=mib(limits.max_record_bytes),
                        env=env_name("max_record_mb"),
                    )  # fmt: skip
                )
            for offset, length in _slices(per_row, batch.num_rows, DECODE_BYTES):
                plain, temporal = _plain(batch.slice(offset, length), name, index)
                try:
                    rows = _rows(plain, temporal)
                except (OverflowError, ValueError, pa.ArrowException) as exc:
                    raise FileProblem(  # rows counted from 1, as records are
                        problem(
                            "parquet_rows_unconvertible",
                            file=name,
                            record=index + 1,
                            first=index + 1,
                            last=index + length,
                            reason=_message(exc),
                        )  # fmt: skip
                    ) from None
                del plain
                yield from rows
                index += length
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise FileProblem(problem("not_parquet", file=name, record=index + 1, reason=_message(exc))) from None


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"
