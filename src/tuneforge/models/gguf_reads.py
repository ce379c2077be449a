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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.RLock()
_depth = 0


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
