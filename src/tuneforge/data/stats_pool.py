"""Token statistics of many records counted by worker processes while the reader goes on.

Rendering chat templates is Python and holds one core; with a pool the reading process parses records
while workers render and tokenize earlier ones, so validating a large dataset uses both cores of a
2-core machine (no more are needed for the gain; more are used when there are). Each worker counts a
chunk into a StatsBuilder of its own, which the reader merges in the order the chunks were read, so the
statistics, previews and refused records are those of counting record by record.

Bounded memory: at most two chunks per worker are in flight, the reader waits for the oldest before
sending more. Error locations: a worker returns the refused records' places in its chunk; the caller
turns them into numbers in the stream (``validate_path`` locates them with a third read).

Workers are forked from the reader (with the tokenizer already loaded, nothing to import again or
pickle); where fork is not available, or for a dataset of a few chunks, the reader counts alone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from concurrent.futures.process import BrokenProcessPool

from tuneforge.errors import ResourceError
from tuneforge.settings import env_name, get_settings

from .load import RecordError
from .records import record_texts

MAX_WORKERS = 4
# Records sent to a worker at once: so many, or fewer holding so many characters (a chunk is copied to a
# worker and a few are in flight: bounded memory whatever the records' sizes).
TOKENIZE_BATCH = 512
TOKENIZE_CHARS = 2 << 20
_builder = None  # the worker's StatsBuilder settings, set by fork


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _init() -> None:
    # One tokenizer thread per worker: the workers are the parallelism (and tokenizers' own threads,
    # forked in use, would deadlock).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _count(records: list[dict]):
    part = _builder.fresh()
    refused = [(i, why.code, why.field, why.params) for i, why in part.add_many(records)]
    part.tokenizer = None  # what comes back is counts, not the tokenizer
    return part, refused


def _died() -> ResourceError:
    return ResourceError(
        "a worker process counting tokens died (killed, most likely for memory); validate again with more "
        f"memory free, or with {env_name('validate_workers')}=1 to count in one process."
    )


class StatsPool:
    """``submit`` chunks in stream order, then ``finish``: the refused records by number in the stream.
    Counts into ``builder`` (a StatsBuilder with a tokenizer)."""

    def __init__(self, builder, workers: int):
        global _builder
        self.builder, self.refused, self.streamed = builder, {}, 0
        self.pending: deque[tuple[int, Future]] = deque()
        self.workers = workers
        self.pool = None
        self.beside: Callable[[], None] | None = None  # see ``run_beside``
        self.thread: Future | None = None
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            _builder = builder
            ctx = multiprocessing.get_context("fork")
            self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init)

    def run_beside(self, work: Callable[[], None]) -> None:
        """Run ``work`` in a thread of this process while the workers count: the duplicate check is one
        thread of Python and numpy, which took ~6 s of 52,000 records' validation with the second core
        idle. It starts now if a chunk was submitted, else at the first ``submit``: once the workers are
        forked (a process forked while another thread runs may copy a lock that thread holds); ``finish``
        waits for it and raises what it raised."""
        self.beside = work
        if self.streamed:
            self._start_beside()

    def submit(self, records: list[dict]) -> None:
        start, self.streamed = self.streamed, self.streamed + len(records)
        if self.pool is None:
            self._start_beside()
            self._merge(start, self.builder.add_many(records))
            return
        if len(self.pending) >= 2 * self.workers:
            self._collect()
        try:
            self.pending.append((start, self.pool.submit(_count, list(records))))
        except BrokenProcessPool:  # the pool knew already
            raise _died() from None
        self._start_beside()

    def _start_beside(self) -> None:
        if self.beside is not None and self.thread is None:
            self.thread = Future()
            threading.Thread(target=_run_into, args=(self.beside, self.thread), daemon=True).start()

    def _collect(self) -> None:
        start, future = self.pending.popleft()
        try:
            part, refused = future.result()
        except BrokenProcessPool:
            raise _died() from None
        self.builder.merge(part)
        self._merge(start, [(i, RecordError(code, field, **params)) for i, code, field, params in refused])

    def _merge(self, start: int, refused) -> None:
        for i, why in refused:
            self.refused[start + i] = why

    def finish(self) -> dict[int, RecordError]:
        try:
            while self.pending:
                self._collect()
            if self.thread is not None:
                self.thread.result()
        finally:
            self.close()
        return self.refused

    def close(self) -> None:
        if self.pool is not None:
            for _, future in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.thread is not None:  # on an error: the thread ends, what it raised is dropped
            futures_wait([self.thread])


def _run_into(work: Callable[[], None], done: Future) -> None:
    try:
        done.set_result(work())
    except BaseException as exc:  # handed to whoever waits: finish() raises it
        done.set_exception(exc)


class Chunk:
    """Records gathered for one worker (or one batch call of the reader's)."""

    def __init__(self):
        self.records: list[dict] = []
        self.chars = 0

    def add(self, record: dict) -> bool:
        """Whether the chunk is full with ``record``."""
        self.records.append(record)
        self.chars += sum(len(t) for t in record_texts(record))
        return len(self.records) >= TOKENIZE_BATCH or self.chars >= TOKENIZE_CHARS

    def take(self) -> list[dict]:
        out, self.records, self.chars = self.records, [], 0
        return out


def pool_for(builder, records: int) -> StatsPool:
    """Workers (``TUNEFORGE_VALIDATE_WORKERS``) for a dataset of more than a few chunks counted with a
    tokenizer (forking costs more than it gains for fewer); the reader alone otherwise."""
    big = builder.tokenizer is not None and records > 4 * TOKENIZE_BATCH
    workers = get_settings().validate_workers or min(MAX_WORKERS, cores())
    return StatsPool(builder, workers if big else 1)


def refuse_callback(refused: dict[int, RecordError]) -> Callable[[dict], None]:
    """An ``on_record`` callback raising, for the n-th record streamed, the refusal found for it."""
    streamed = [0]

    def refuse(record: dict) -> None:
        streamed[0] += 1
        if streamed[0] - 1 in refused:
            raise refused[streamed[0] - 1]

    return refuse
