"""Encoded answers of listed rows, kept per row version: a bounded, least-recently-used map by bytes.

A page of 50 jobs spent most of its server CPU on work done for each row on every request (decoding the
JSON columns, building the answer's dict, validating it, writing its JSON), while most rows of a large
table are finished jobs that never change again. A row's encoded answer is kept under its id together
with the *version* it was made from, and answers again while the row's version is equal to it. What a
version holds is the caller's choice; it must cover everything the answer is made of (``job_answers``
uses the row's values exactly as the database returned them, see there).

The map is bounded by the bytes it counts (the answer, the version's values, an entry's overhead), the
least recently used entries out first; an answer larger than the whole bound is not kept. Two read threads
use it at once (``read_threads``): a lock guards the map and the counters, and encoding runs outside it.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

DEFAULT_MAX_BYTES = 64 << 20
# What sys.getsizeof does not see of an entry: the OrderedDict's node and the key's share of its table,
# and the Entry tuple's own header. Measured with tracemalloc (tests/platform/test_answer_cache.py).
ENTRY_OVERHEAD = 160


class Entry(NamedTuple):
    version: tuple
    answer: bytes
    extra: Any  # what the caller checks on a hit besides the version (job_answers: a best.json record)
    size: int


class AnswerCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, version: tuple) -> Entry | None:
        """The entry kept for ``key`` if it was made from an equal ``version``."""
        return self.get_many([(key, version)])[0]

    def get_many(self, wanted: list[tuple[str, tuple]]) -> list[Entry | None]:
        """``get`` of each ``(key, version)``, under the lock once (a page's fifty took it fifty times)."""
        found = []
        entries = self._entries
        with self._lock:
            for key, version in wanted:
                entry = entries.get(key)
                if entry is None or entry.version != version:
                    found.append(None)
                else:
                    entries.move_to_end(key)
                    found.append(entry)
        return found

    def put(self, key: str, version: tuple, answer: bytes, extra: Any = None) -> None:
        """Keep ``answer`` for ``key`` at ``version``, replacing any older one."""
        size = sys.getsizeof(answer) + sizeof(version) + sys.getsizeof(extra) + ENTRY_OVERHEAD
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.size
            if size > self.max_bytes:
                return
            self._entries[key] = Entry(version, answer, extra, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.size

    def count(self, hits: int, misses: int) -> None:
        """Answers served from the cache and made anew (a request's, counted once: /metrics shows them)."""
        with self._lock:
            self.hits += hits
            self.misses += misses


def sizeof(values: tuple) -> int:
    """The bytes a version tuple keeps alive: the tuple and each value (flat values: str, numbers, None)."""
    return sys.getsizeof(values) + sum(map(sys.getsizeof, values))
