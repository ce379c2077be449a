"""The API's hot reads (a job list page, a job) run in worker threads of their own, two at a time.

A plain ``def`` route runs in anyio's default pool of 40 threads, and with 50 clients listing jobs at once
40 threads took turns at the one interpreter lock: each hand-over costs CPU, and the list's server time
per request doubled against one client's (14 against 7 ms here). Two threads keep the event loop free
while a database answers (a PostgreSQL round trip, a page read from disk) and hand the lock over rarely;
more gain nothing in one interpreter. Each event loop has its own limiter (anyio's ``RunVar``), as anyio
keeps its default one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from anyio.lowlevel import RunVar

READ_THREADS = 2
T = TypeVar("T")
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("tuneforge_read_threads")


async def in_read_thread(read: Callable[[], T]) -> T:
    try:
        limiter = _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(READ_THREADS)
        _limiter.set(limiter)
    return await anyio.to_thread.run_sync(read, limiter=limiter)
