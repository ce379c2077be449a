"""Pick the CPU thread count for decode steps by measuring, and keep measuring.

On a machine whose cores are shared with other busy processes, torch's OpenMP threads wait on each
other at every op: measured here (2 cores, load ~11), one decode step of SmolLM2-135M took 110 ms
with 1 thread and 1,800 ms with 2 — while on idle cores 2 threads are the faster choice. Neither
setting is right everywhere, and the load changes while a server runs, so the engine times its own
decode steps: now and then one step runs with the other candidate, and the faster one (for batches
of that size) is kept. A probe that loses waits twice as long before the next, so a setting that is
15x slower costs one step in thousands (a probe step costs up to 15 normal ones: at most a few %).
"""

from __future__ import annotations

import torch

# Start on one thread: on busy cores the other choice is ~15x slower, on idle ones ~1.5x faster, so
# the safe start loses little; a probe (one step) then finds out.
FIRST_PROBE = 16
MIN_INTERVAL, MAX_INTERVAL = 256, 8192


class ThreadTuner:
    def __init__(self, allowed: int):
        self.candidates = sorted({1, max(1, allowed)})
        self.current = self.candidates[0]
        self.ema: dict[tuple[int, int], float] = {}
        self.interval = MIN_INTERVAL
        self.next_probe = FIRST_PROBE
        self.steps = 0
        self.probing: int | None = None
        torch.set_num_threads(self.current)

    @staticmethod
    def _bucket(batch: int) -> int:
        return 1 << (batch - 1).bit_length()  # 1, 2, 4, 8, …: steps of similar cost

    def before_step(self) -> None:
        if len(self.candidates) == 1:
            return
        self.steps += 1
        if self.steps >= self.next_probe:
            self.probing = next(c for c in self.candidates if c != self.current)
            torch.set_num_threads(self.probing)

    def after_step(self, batch: int, seconds: float) -> None:
        if len(self.candidates) == 1:
            return
        bucket = self._bucket(batch)
        threads = self.probing or self.current
        old = self.ema.get((threads, bucket))
        self.ema[(threads, bucket)] = seconds if old is None or self.probing else 0.8 * old + 0.2 * seconds
        if self.probing is None:
            return
        mine = self.ema.get((self.current, bucket))
        if mine is not None and seconds < mine:
            self.current, self.interval = self.probing, MIN_INTERVAL  # the other one is faster now
        else:
            self.interval = min(self.interval * 2, MAX_INTERVAL)
        self.probing = None
        self.next_probe = self.steps + self.interval
        torch.set_num_threads(self.current)
