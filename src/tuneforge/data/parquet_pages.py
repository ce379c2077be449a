"""The page sizes a Parquet file declares, read from its page headers before Arrow decodes anything.

Arrow decompresses a whole page into a buffer of the size the page header declares, and while it reads
a batch it holds the current page of every column. A 70 KB file can hold a 1.5 GB page of repeated
bytes (zstd), and ten such columns make Arrow allocate 15 GB for the first 64 rows — before any count
of decoded bytes can stop it. The footer's per-column totals are written by the same hand as the pages,
so the pages themselves are walked: each header is Thrift compact protocol, and only two of its fields
matter here (the uncompressed and compressed page sizes); the rest is skipped by type.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEADER_BYTES = 2**20  # Arrow truncates page statistics at 4 KB; other writers stay far below this
MAX_NESTING = 32
# The walk is Python, ~6 µs a page: it must not become the slow part of a crafted file. Real files have
# pages of 8 KB–1 MB (a 2 GB file: a few thousand); a million pages or 64 MiB of headers is refused.
MAX_PAGES = 1_000_000
MAX_HEADER_TOTAL = 64 * 2**20
_READ = 4096  # a header without statistics is ~30 bytes


class BadPages(ValueError):
    """The pages cannot be walked: a header is malformed or runs past its column chunk."""


class TooManyPages(BadPages):
    """More pages or header bytes than MAX_PAGES / MAX_HEADER_TOTAL."""


@dataclass
class WalkBudget:
    pages: int = MAX_PAGES
    header_bytes: int = MAX_HEADER_TOTAL

    def take(self, header: int) -> None:
        self.pages -= 1
        self.header_bytes -= header
        if self.pages < 0:
            raise TooManyPages(f"more than {MAX_PAGES:,} pages; write it with larger pages (1 MiB is usual)")
        if self.header_bytes < 0:
            raise TooManyPages(f"more than {MAX_HEADER_TOTAL // 2**20} MiB of page headers")


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
            head = self.byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            self.room_for(size)
            for _ in range(size):
                self.skip(_element(elem), depth + 1)
        elif ttype == 11:
            size = self.varint()
            if size:
                kinds = self.byte()
                self.room_for(2 * size)
                for _ in range(size):
                    self.skip(_element(kinds >> 4), depth + 1)
                    self.skip(_element(kinds & 0x0F), depth + 1)
        elif ttype == 12:
            for _fid, ftype in self.fields():
                self.skip(ftype, depth + 1)
        else:
            raise BadPages(f"unknown Thrift type {ttype}")

    def room_for(self, elements: int) -> None:
        """Every element takes a byte at least: a count beyond what is left is read further or refused
        (a crafted count of 2**63 elements of a zero-byte kind would loop for ever otherwise)."""
        if elements > len(self.buf) - self.pos:
            raise IndexError

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


def chunk_pages(source, start: int, length: int, budget: WalkBudget | None = None) -> ChunkPages:
    """Walk the pages of the column chunk at ``start`` (``length`` bytes, headers included); the last
    page must end exactly where the chunk does."""
    budget = budget or WalkBudget()
    out, pos, end = ChunkPages(), start, start + length
    while pos < end:
        want = _READ
        while True:
            source.seek(pos)
            buf = source.read(min(want, end - pos))
            try:
                kind, uncompressed, compressed, header = _page_header(buf)
                break
            except IndexError:  # the header goes on past what was read
                if len(buf) < min(want, end - pos) or want >= MAX_HEADER_BYTES or want >= end - pos:
                    raise BadPages("a page header runs past its column chunk") from None
                want *= 4
        budget.take(header)
        if kind == DICTIONARY_PAGE:
            out.dictionary = max(out.dictionary, uncompressed)
        else:
            out.largest = max(out.largest, uncompressed)
        out.total += uncompressed
        pos += header + compressed
    if pos != end:
        raise BadPages("a page runs past its column chunk")
    return out
