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

MAX_HEADER_BYTES = 16 * 2**20  # page statistics may hold long min/max strings; never this long
MAX_NESTING = 32
_READ = 4096  # a header without statistics is ~30 bytes


class BadPages(ValueError):
    """The pages cannot be walked: a header is malformed or runs past its column chunk."""


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
            for _ in range(size):
                self.skip(3 if elem in (1, 2) else elem, depth + 1)  # bools in lists are one byte
        elif ttype == 11:
            size = self.varint()
            if size:
                kinds = self.byte()
                for _ in range(size):
                    self.skip(kinds >> 4, depth + 1)
                    self.skip(kinds & 0x0F, depth + 1)
        elif ttype == 12:
            for _fid, ftype in self.fields():
                self.skip(ftype, depth + 1)
        else:
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


def chunk_pages(source, start: int, length: int) -> ChunkPages:
    """Walk the pages of the column chunk at ``start`` (``length`` bytes, headers included)."""
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
        if kind == DICTIONARY_PAGE:
            out.dictionary = max(out.dictionary, uncompressed)
        else:
            out.largest = max(out.largest, uncompressed)
        out.total += uncompressed
        pos += header + compressed
    return out
