"""Pick the CPU thread count for decode steps by measuring, and keep measuring.

On a machine whose cores are shared with other busy processes, torch's OpenMP threads wait on each
other at every op: measured here (2 cores, load ~11), one decode step of SmolLM2-135M took 110 ms
with 1 thread and 1,800 ms with 2 — while on idle cores 2 threads are the faster choice. Neither
setting is right everywhere, and the load changes while a server runs, so the engine times its own
steps: now and then it runs a few steps with the other candidate and keeps whichever was faster for
batches of that size.
"""

from __future__ import annotations

import torch


class ThreadTuner:
    def __init__(self, allowed: int, probe_every: int = 64, probe_steps: int = 3):
        self.candidates = sorted({1, max(1, allowed)})
        self.current = self.candidates[-1]
        self.probe_every, self.probe_steps = probe_every, probe_steps
        self.ema: dict[tuple[int, int], float] = {}
        self.steps = 0
        self.probing: int | None = None
        self.probe_left = 0
        torch.set_num_threads(self.current)

    @staticmethod
    def _bucket(batch: int) -> int:
        return 1 << (batch - 1).bit_length()  # 1, 2, 4, 8, …: steps of similar cost

    def before_step(self) -> None:
        if len(self.candidates) == 1:
            return
        self.steps += 1
        # the first probe comes early (step 4): a wrong start would cost the first answers dearly
        if self.probing is None and self.steps % self.probe_every == 4:
            self.probing = next(c for c in self.candidates if c != self.current)
            self.probe_left = self.probe_steps
            torch.set_num_threads(self.probing)

    def after_step(self, batch: int, seconds: float) -> None:
        if len(self.candidates) == 1:
            return
        threads = self.probing or self.current
        key = (threads, self._bucket(batch))
        old = self.ema.get(key)
        self.ema[key] = seconds if old is None else 0.7 * old + 0.3 * seconds
        if self.probing is None:
            return
        self.probe_left -= 1
        if self.probe_left > 0:
            return
        bucket = self._bucket(batch)
        timed = {c: self.ema[(c, bucket)] for c in self.candidates if (c, bucket) in self.ema}
        self.current = min(timed, key=timed.get) if timed else self.current
        self.probing = None
        torch.set_num_threads(self.current)
