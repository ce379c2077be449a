"""A user's regex searched in texts with a time bound: GRPO's format reward.

A regex that backtracks catastrophically (``^(a|aa)+$`` against 60 a's and a b: ~1.6^60 steps) would hold
the training process, and its GPU, for ever: ``re`` has no timeout, a signal only reaches the main thread
(Ray Train runs the loop in another), and the ``regex`` package's timeout comes with a compiler that
unrolls counted repeats (``(?:(?:a{999}){999}){999}`` takes all memory). So the search runs in a child
process with ``re``; a text it has not finished within ``timeout_s`` is not found, and the child is killed
and started again for the next text. One text a round trip (well under a millisecond), the child started
once per pattern.
"""

from __future__ import annotations

import logging
import multiprocessing
import re

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0  # a spawned child imports the parent's main module (the CLI, torch) first


def _serve(pattern: str, conn) -> None:
    compiled = re.compile(pattern, re.S)
    conn.send("ready")
    while True:
        try:
            text = conn.recv()
        except EOFError:  # the parent is gone
            return
        conn.send(compiled.search(text) is not None)


class BoundedSearch:
    """``search(text)``: whether ``pattern`` is in ``text``; False when that takes over ``timeout_s``."""

    def __init__(self, pattern: str, timeout_s: float):
        re.compile(pattern)  # a bad pattern fails here, not in the child
        self.pattern, self.timeout_s = pattern, timeout_s
        self._proc = self._conn = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(self.pattern, child), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"the format reward's regex process did not start in {START_TIMEOUT_S:.0f}s")
        self._conn.recv()

    def search(self, text: str) -> bool:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send(text)
        if self._conn.poll(self.timeout_s):
            return self._conn.recv()
        log.warning(
            "format reward: the regex %r took over %ss on a completion of %d characters; scored 0 "
            "(rewrite it without nested repeats such as (a|aa)+)",
            self.pattern, self.timeout_s, len(text),
        )  # fmt: skip
        self.close()
        return False

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
