"""The page sizes a Parquet file declares, read from its page headers before Arrow decodes anything.

Arrow decompresses a whole page into a buffer of the size the page header declares, and while it reads
a batch it holds the current page of every column. A 70 KB file can hold a 1.5 GB page of repeated
bytes (zstd), and ten such columns make Arrow allocate 15 GB for the first 64 rows — before any count
of decoded bytes can stop it. The footer's per-column totals are written by the same hand as the pages,
so the pages themselves are walked: each header is Thrift compact protocol, and only two of its fields
matter here (the uncompressed and compressed page sizes); the rest is skipped by type.

The footer's column chunks are read here too, not through pyarrow: pyarrow's per-column metadata
accessors throw C++ exceptions its bindings do not catch, so a footer crafted to make one throw (a
byte-array column declared INT96, a histogram of the wrong size) aborted the whole process — the server,
when a dataset was uploaded to it. The walk reads forward only (chunks in file order): a Parquet file
inside a zip is a stream that decompresses from its start again on every backward seek.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 2**20  # Arrow truncates page statistics at 4 KB; other writers stay far below this
MAX_NESTING = 32
MAX_CONTAINER = 1_000_000  # elements in one Thrift list or map (Arrow's own limit)
MAX_FOOTER_BYTES = 64 * 2**20
# The walk is Python, ~6 µs a page and ~0.2 µs a header byte: it must not become the slow part of a
# crafted file. Real files have pages of 8 KB–1 MB (a 2 GB file: a few thousand) with headers of tens of
# bytes; a million pages, or 16 MiB of headers parsed, is refused.
MAX_PAGES = 1_000_000
MAX_PARSED = 16 * 2**20
_READ = 4096  # a header without statistics is ~30 bytes


class BadPages(ValueError):
    """The pages cannot be walked: a header is malformed or runs past its column chunk."""


class TooManyPages(BadPages):
    """More pages or header bytes than MAX_PAGES / MAX_PARSED."""


@dataclass
class WalkBudget:
    pages: int = MAX_PAGES
    parsed: int = MAX_PARSED

    def take_page(self) -> None:
        self.pages -= 1
        if self.pages < 0:
            raise TooManyPages(f"more than {MAX_PAGES:,} pages; write it with larger pages (1 MiB is usual)")

    def take_parsed(self, n: int) -> None:
        self.parsed -= n
        if self.parsed < 0:
            raise TooManyPages(f"more than {MAX_PARSED // 2**20} MiB of page headers")


class _Compact:
    """Just enough of Thrift's compact protocol to read two i32 fields and skip everything else."""

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise IndexError
        self.pos += 1
        return self.buf[self.pos - 1]

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise BadPages("varint longer than 10 bytes")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def skip(self, ttype: int, depth: int) -> None:
        if depth > MAX_NESTING:
            raise BadPages("header nested too deep")
        if ttype in (1, 2):  # bool: the value is the type itself
            return
        if ttype == 3:
            self.byte()
        elif ttype in (4, 5, 6):
            self.varint()
        elif ttype == 7:
            self.advance(8)
        elif ttype == 8:
            self.advance(self.varint())
        elif ttype in (9, 10):
            size, elem = self.list_head()
            for _ in range(size):
                self.skip(elem, depth + 1)
        elif ttype == 11:
            size, key, item = self.map_head()
            for _ in range(size):
                self.skip(key, depth + 1)
                self.skip(item, depth + 1)
        elif ttype == 12:
            for _fid, ftype in self.fields():
                self.skip(ftype, depth + 1)
        else:
            raise BadPages(f"unknown Thrift type {ttype}")

    def list_head(self) -> tuple[int, int]:
        """(element count, element type) of a list or set."""
        head = self.byte()
        size = self.varint() if head >> 4 == 15 else head >> 4
        self.room_for(size)
        return size, _element(head & 0x0F)

    def map_head(self) -> tuple[int, int, int]:
        """(entry count, key type, value type) of a map."""
        size = self.varint()
        if not size:
            return 0, 0, 0
        kinds = self.byte()
        self.room_for(2 * size)
        return size, _element(kinds >> 4), _element(kinds & 0x0F)

    def room_for(self, elements: int) -> None:
        """Every element takes a byte at least: a count beyond what is left is read further or refused
        (a crafted count of 2**63 elements of a zero-byte kind would loop for ever otherwise)."""
        if elements > MAX_CONTAINER:
            raise BadPages(f"a Thrift container of {elements:,} elements")
        if elements > len(self.buf) - self.pos:
            raise IndexError

    def value(self, ttype: int, depth: int = 0):
        """A whole value: a struct as {field id: value}, a list as a list, binary as bytes."""
        if depth > MAX_NESTING:
            raise BadPages("nested too deep")
        if ttype in (1, 2):
            return ttype == 1
        if ttype == 3:
            return self.byte()
        if ttype in (4, 5, 6):
            return self.zigzag()
        if ttype in (7, 8):
            n = 8 if ttype == 7 else self.varint()
            start = self.pos
            self.advance(n)
            return bytes(self.buf[start : self.pos])
        if ttype in (9, 10):
            size, elem = self.list_head()
            return [self.value(elem, depth + 1) for _ in range(size)]
        if ttype == 11:
            size, key, item = self.map_head()
            return [(self.value(key, depth + 1), self.value(item, depth + 1)) for _ in range(size)]
        if ttype == 12:
            return {fid: self.value(ftype, depth + 1) for fid, ftype in self.fields()}
        raise BadPages(f"unknown Thrift type {ttype}")

    def advance(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise IndexError
        self.pos += n

    def fields(self):
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            delta, ftype = head >> 4, head & 0x0F
            last = last + delta if delta else self.zigzag()
            yield last, ftype


DICTIONARY_PAGE = 2


def _element(kind: int) -> int:
    """Inside lists, sets and maps a bool is a byte of its own (type 1), not folded into a field header."""
    return 3 if kind in (1, 2) else kind


def _page_header(buf: bytes) -> tuple[int, int, int, int]:
    """(page type, uncompressed size, compressed size, header length) of the PageHeader in ``buf``."""
    reader, sizes = _Compact(buf), {}
    for fid, ftype in reader.fields():
        if fid in (1, 2, 3) and ftype == 5:
            sizes[fid] = reader.zigzag()
        else:
            reader.skip(ftype, 1)
    if not {1, 2, 3} <= sizes.keys():
        raise BadPages("a page header without its type or sizes")
    if sizes[2] < 0 or sizes[3] < 0:
        raise BadPages("a page header declares a negative size")
    return sizes[1], sizes[2], sizes[3], reader.pos


@dataclass
class ChunkPages:
    largest: int = 0  # the largest data page, decoded
    dictionary: int = 0  # the dictionary page, decoded (held while the chunk is read)
    total: int = 0  # every page, decoded


class ForwardReader:
    """Bytes of a file by offset, read forward only, with the bytes not yet walked kept in a window."""

    def __init__(self, source):
        self.source, self.base, self.buf = source, 0, bytearray()
        source.seek(0)

    def view(self, pos: int, n: int) -> bytes:
        if pos < self.base:
            raise BadPages("column chunks out of order")  # never: chunks are walked sorted by offset
        if pos > self.base + len(self.buf):  # skip forward: a zip member decompresses and discards
            self.source.seek(pos)
            self.base, self.buf = pos, bytearray()
        elif pos > self.base:
            del self.buf[: pos - self.base]
            self.base = pos
        while len(self.buf) < n:
            more = self.source.read(max(n - len(self.buf), _READ))
            if not more:
                break
            self.buf += more
        return bytes(self.buf[:n])


def chunk_pages(
    reader: ForwardReader, start: int, length: int, budget: WalkBudget | None = None
) -> ChunkPages:
    """Walk the pages of the column chunk at ``start`` (``length`` bytes, headers included); the last
    page must end exactly where the chunk does."""
    budget = budget or WalkBudget()
    out, pos, end = ChunkPages(), start, start + length
    while pos < end:
        budget.take_page()
        want = min(_READ, end - pos)
        while True:
            buf = reader.view(pos, want)
            try:
                kind, uncompressed, compressed, header = _page_header(buf)
                budget.take_parsed(header)
                break
            except IndexError:  # the header goes on past what was read (all of which was parsed)
                budget.take_parsed(len(buf))
                if len(buf) < want or want >= min(MAX_HEADER_BYTES, end - pos):
                    raise BadPages("a page header runs past its column chunk") from None
                want = min(want * 8, MAX_HEADER_BYTES, end - pos)
        if kind == DICTIONARY_PAGE:
            out.dictionary = max(out.dictionary, uncompressed)
        else:
            out.largest = max(out.largest, uncompressed)
        out.total += uncompressed
        pos += header + compressed
    if pos != end:
        raise BadPages("a page runs past its column chunk")
    return out


@dataclass
class Footer:
    leaves: int  # columns of the schema
    groups: list[list[tuple[int, int]]] = field(default_factory=list)  # per row group: (start, length)


def read_footer(source) -> Footer:
    """The schema's column count and every column chunk's byte range, from the file's own footer."""
    source.seek(0, 2)
    size = source.tell()
    if size < 12:
        raise BadPages("too short for a Parquet file")
    source.seek(size - 8)
    tail = source.read(8)
    footer_len = struct.unpack("<i", tail[:4])[0]
    if tail[4:] != b"PAR1" or not 0 < footer_len <= min(size - 12, MAX_FOOTER_BYTES):
        raise BadPages("no readable footer")
    source.seek(size - 8 - footer_len)
    meta = _Compact(source.read(footer_len))
    try:
        fields = meta.value(12)
    except IndexError:
        raise BadPages("the footer is cut short") from None
    schema = fields.get(2)
    if not isinstance(schema, list) or not schema or not all(isinstance(e, dict) for e in schema):
        raise BadPages("the footer has no schema")
    leaves = sum(1 for e in schema[1:] if not e.get(5))  # elements without children are the columns
    footer = Footer(leaves)
    for g, group in enumerate(fields.get(4) or []):
        columns = group.get(1) if isinstance(group, dict) else None
        if not isinstance(columns, list):
            raise BadPages(f"row group {g} lists no column chunks")
        ranges = []
        for c, chunk in enumerate(columns):
            meta_data = chunk.get(3) if isinstance(chunk, dict) else None
            if chunk.get(1) if isinstance(chunk, dict) else None:
                raise BadPages(f"row group {g} column {c} lives in another file; that is not read")
            if not isinstance(meta_data, dict):
                raise BadPages(f"row group {g} column {c}: no metadata (an encrypted file?)")
            offsets = [o for o in (meta_data.get(9), meta_data.get(11)) if isinstance(o, int) and o > 0]
            length = meta_data.get(7)
            if not offsets or not isinstance(length, int):
                raise BadPages(f"row group {g} column {c}: no page offset")
            ranges.append((min(offsets), length))
        footer.groups.append(ranges)
    return footer
