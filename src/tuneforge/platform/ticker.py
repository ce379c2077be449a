"""A control-plane loop on its own thread: reconcile once at start, then tick until stopped.

The job supervisor and the deployment supervisor are both this shape; ``wake()`` runs the next tick now
(a job was created, a deployment scaled) instead of after the interval.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Ticker:
    thread_name = "tuneforge-ticker"

    def __init__(self, interval: float):
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reconcile(self) -> None:
        """What a (re)started control plane finds; runs before the first tick."""

    def tick(self) -> None:
        raise NotImplementedError

    def next_wait(self) -> float:
        return self.interval

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad tick must not end supervision; the next one retries
                log.exception("%s: tick failed", self.thread_name)
            self._wake.wait(self.next_wait())
            self._wake.clear()
