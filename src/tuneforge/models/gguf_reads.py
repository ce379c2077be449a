"""One parse of a GGUF file, and one tensor-name table, per conversion.

Converting a GGUF with transformers parses the file's metadata again for each part it loads — the
config, the tokenizer, the config again and the weights — and the ``gguf`` package's reader spends
~13-20 s on SmolLM2's 49,152-token vocabulary (a numpy memmap view per string); then, mapping the
weights' names, it builds gguf's tensor-name table once per module of the model (397 times, 64 ms
each). Those were ~70 of the 81 s of ``models pull smollm2-135m-instruct`` on a 2-core EPYC. Inside
``shared_gguf_reads()`` every ``gguf.GGUFReader(path)`` of one file returns the first reader (the
reader only reads its memmap, so sharing it changes nothing) and ``gguf.get_tensor_name_map`` is
memoized (a read-only table of an architecture and a layer count). transformers imports both from
the module at each call, so swapping the module's attributes for the duration reaches them.
Conversions take a lock for that time: the swap is process-wide, and a second conversion in another
thread (the server pulls in threads) must neither see the first one's readers nor restore the
originals under it.

Before gguf's reader parses a file, ``check_bounds`` walks its metadata once without keeping anything:
gguf's reader keeps several numpy views and lists per array element (~1.5 KB each), so an 8 MB file of
a million empty strings took 1.6 GB and two minutes to refuse. Counts past the bounds below are refused
with a ConfigError before any of that is allocated.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tuneforge.errors import ConfigError

_lock = threading.RLock()
_depth = 0

# Far above real files (a 70B Llama: ~40 fields, 723 tensors; Gemma 3's 262,144-token vocabulary and its
# scores and types: 786,432 array elements), far below what exhausts memory in gguf's reader.
MAX_FIELDS = 1 << 16
MAX_TENSORS = 1 << 16
MAX_ELEMENTS = 1 << 21  # array elements over all fields
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS
MAX_KEY_BYTES = 1 << 16
MAX_NESTING = 4
_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # gguf.GGUFValueType
_STRING, _ARRAY = 8, 9


@contextmanager
def shared_gguf_reads() -> Iterator[None]:
    global _depth
    with _lock:
        if _depth:  # nested (import checks the file, then converts it): the outer scope's readers serve
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        import gguf

        real, real_map = gguf.GGUFReader, gguf.get_tensor_name_map
        readers: dict[tuple[str, str], object] = {}
        maps: dict[tuple, object] = {}

        def reader(path, mode="r"):
            key = (os.path.realpath(os.fspath(path)), mode)
            if key not in readers:
                check_bounds(path)
                readers[key] = real(path, mode)
            return readers[key]

        def name_map(arch, n_blocks):
            if (arch, n_blocks) not in maps:
                maps[arch, n_blocks] = real_map(arch, n_blocks)
            return maps[arch, n_blocks]

        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
        _depth = 1
        try:
            yield
        finally:
            _depth = 0
            gguf.GGUFReader, gguf.get_tensor_name_map = real, real_map
            readers.clear()
            maps.clear()


def check_bounds(path) -> None:
    """Refuse a GGUF whose metadata counts (fields, tensors, array elements, key lengths, dimensions) pass
    the bounds above or run past the end of the file, reading its header once and keeping nothing.
    Leaves a file it cannot walk (not GGUF, another version) to gguf's own reader and its error."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _Walk(data, os.fspath(path)).header()


class _Walk:
    def __init__(self, data, name: str):
        self.data, self.name, self.at, self.elements = data, name, 0, 0
        self.order = "<"

    def header(self) -> None:
        if self.data[:4] != b"GGUF":
            return
        version = struct.unpack_from("<I", self.data, 4)[0]
        if version & 0xFFFF == 0:  # written on a machine of the other byte order, as gguf reads it
            self.order, version = ">", struct.unpack_from(">I", self.data, 4)[0]
        if version not in (2, 3):
            return
        self.at = 8
        tensors, fields = self.ints("Q", 2)
        self.bound(fields, MAX_FIELDS, "metadata fields")
        self.bound(tensors, MAX_TENSORS, "tensors")
        for i in range(fields):
            key = self.string(MAX_KEY_BYTES, f"the key of metadata field {i}")
            self.value(self.ints("I")[0], key, 0)
        for i in range(tensors):
            self.string(MAX_KEY_BYTES, f"the name of tensor {i}")
            dims = self.ints("I")[0]
            self.bound(dims, MAX_DIMS, f"dimensions of tensor {i}")
            self.skip(8 * dims + 4 + 8, f"tensor {i}")

    def value(self, kind: int, key: str, depth: int) -> None:
        if kind in _SCALARS:
            self.skip(_SCALARS[kind], key)
        elif kind == _STRING:
            self.string(None, key)
        elif kind == _ARRAY:
            self.bound(depth, MAX_NESTING - 1, f"nested arrays in {key}")
            item, count = self.ints("I")[0], self.ints("Q")[0]
            self.elements += count
            self.bound(self.elements, MAX_ELEMENTS, f"array elements (over all fields, at {key})")
            if item in _SCALARS:
                self.skip(_SCALARS[item] * count, key)
            else:
                for _ in range(count):
                    self.value(item, key, depth + 1)
        else:
            raise ConfigError(f"{self.name}: metadata field {key} has unknown value type {kind}")

    def string(self, limit: int | None, what: str) -> str:
        n = self.ints("Q")[0]
        if limit is not None:
            self.bound(n, limit, f"bytes in {what}")
        start = self.at
        self.skip(n, what)
        return bytes(self.data[start : min(start + n, start + 200)]).decode("utf-8", "replace")

    def ints(self, code: str, count: int = 1) -> tuple[int, ...]:
        width = struct.calcsize(code) * count
        self.ends_inside(width, "the header")
        values = struct.unpack_from(f"{self.order}{count}{code}", self.data, self.at)
        self.at += width
        return values

    def skip(self, n: int, what: str) -> None:
        self.ends_inside(n, what)
        self.at += n

    def ends_inside(self, n: int, what: str) -> None:
        if self.at + n > len(self.data):
            raise ConfigError(f"{self.name}: {what} runs past the end of the file ({len(self.data):,} bytes)")

    def bound(self, n: int, limit: int, what: str) -> None:
        if n > limit:
            raise ConfigError(f"{self.name} declares {n:,} {what}; tuneforge reads at most {limit:,}")
