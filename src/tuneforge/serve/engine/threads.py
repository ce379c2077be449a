"""Pick how each decode step runs on the CPU — thread count and weight layout — by measuring, per batch
size, from the first steps on, and keep measuring.

Threads: on a machine whose cores are shared with other busy processes, torch's OpenMP threads wait on
each other at every op: measured here (2 cores, load ~11), one decode step of SmolLM2-135M took 110 ms
with 1 thread and 1,800 ms with 2 — while on idle cores 2 threads are the faster choice.

Layout: oneDNN's packed weights (packed_linear.py) win at many rows, plain MKL on the unpacked weight
at one: measured here (2-core EPYC without AVX-512, load ~6, 1 thread, interleaved steps), a decode
step of one request took 76 ms with MKL against 95 ms packed, one of 16 requests 186 against 131 ms.

Neither choice is right on every machine, batch size and load, so the engine times its own steps. The
first steps of each batch bucket (1, 2, 4, … rows; prefill forwards, by prompt tokens, in buckets of
their own: a prefill's cost per token is not a decode step's per row, and a bucket calibrated on a mix
of both chose by whichever candidate happened to time a prefill) calibrate: each candidate runs
``ROUNDS`` steps, interleaved, and a candidate already twice as slow as the best is dropped after its
first step (the busy-machine case costs one slow step per bucket, not several). The fastest (per row,
best of its steps) is kept; then now and then one step probes another candidate, and a probe that loses waits
twice as long before the next (a setting 15x slower costs one step in thousands).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

ROUNDS = 2  # calibration steps per candidate and bucket (best of them: a new shape's first call is slow)
DROP_ABOVE = 2.0  # a candidate this many times slower than the best so far stops calibrating
MIN_INTERVAL, MAX_INTERVAL = 256, 8192


class Setting(NamedTuple):
    threads: int
    packed: bool  # oneDNN-packed weights (True) or MKL on the plain ones


@dataclass
class _Bucket:
    todo: list[Setting]  # calibration steps still to run, in order
    best: dict[Setting, float] = field(default_factory=dict)  # seconds per row, best sample
    choice: Setting | None = None
    ema: float = 0.0  # seconds per row of ``choice``
    steps: int = 0
    interval: int = MIN_INTERVAL
    next_probe: int = MIN_INTERVAL
    probe_turn: int = 0


class ThreadTuner:
    def __init__(
        self,
        threads: list[int],
        layouts: tuple[bool, ...] = (True,),
        apply_layout: Callable[[bool], None] | None = None,
    ):
        # The safe candidate first: the fewest threads (never the 15x case), the first layout.
        self.candidates = [Setting(t, p) for t in sorted(set(threads)) for p in layouts]
        self._apply_layout = apply_layout or (lambda packed: None)
        self.buckets: dict[tuple[int, bool], _Bucket] = {}  # (bucket, prefill)
        self.now: Setting | None = None  # what the coming step runs with
        self._set(self.candidates[0])

    @staticmethod
    def bucket(batch: int) -> int:
        return 1 << (batch - 1).bit_length()  # 1, 2, 4, 8, …: steps of similar cost per row

    def _set(self, setting: Setting) -> None:
        if self.now is None or setting.threads != self.now.threads:
            torch.set_num_threads(setting.threads)
        if self.now is None or setting.packed != self.now.packed:
            self._apply_layout(setting.packed)
        self.now = setting

    def choices(self, prefill: bool = False) -> dict[int, Setting]:
        """The setting each calibrated bucket of decode steps (or prefills) runs with (metrics, logs)."""
        return {
            k: b.choice for (k, p), b in sorted(self.buckets.items()) if p == prefill and b.choice is not None
        }

    def before_step(self, batch: int, prefill: bool = False) -> None:
        """Switch to the setting this step of ``batch`` rows (a prefill: tokens) runs with."""
        key = (self.bucket(batch), prefill)
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = _Bucket(todo=self.candidates * ROUNDS)
        if b.todo:
            self._set(b.todo[0])
        elif len(self.candidates) > 1 and b.steps >= b.next_probe:
            others = [c for c in self.candidates if c != b.choice]
            self._set(others[b.probe_turn % len(others)])
            b.probe_turn += 1
        else:
            self._set(b.choice)

    def after_step(self, batch: int, seconds: float, prefill: bool = False) -> Setting | None:
        """Record the step's time; returns the bucket's setting when this step (re)decided it."""
        b = self.buckets[(self.bucket(batch), prefill)]
        b.steps += 1
        per_row = seconds / batch
        ran = self.now
        if b.todo:
            b.todo.pop(0)
            b.best[ran] = min(per_row, b.best.get(ran, per_row))
            fastest = min(b.best.values())
            b.todo = [c for c in b.todo if b.best.get(c, fastest) <= DROP_ABOVE * fastest]
            if b.todo:
                return None
            b.choice = min(b.best, key=b.best.__getitem__)
            b.ema = b.best[b.choice]
            b.next_probe = b.steps + b.interval
            return b.choice
        if ran == b.choice:
            b.ema = 0.8 * b.ema + 0.2 * per_row
            return None
        # a probe
        changed = per_row < b.ema
        if changed:
            b.choice, b.ema, b.interval = ran, per_row, MIN_INTERVAL
        else:
            b.interval = min(b.interval * 2, MAX_INTERVAL)
        b.next_probe = b.steps + b.interval
        return b.choice if changed else None
