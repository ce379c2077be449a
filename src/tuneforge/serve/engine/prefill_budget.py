"""How many prompt tokens the engine prefills between two decode steps (padding included).

A fixed budget trades two latencies badly at both ends: with nothing decoding it makes a burst of
arrivals wait one loop turn per budget for no one's benefit, and with many requests waiting behind a
few running streams it keeps the many waiting to spare the few a gap. So the budget follows what a
step's prefill costs the running streams, measured in the engine's own time (moving averages of the
seconds per prefilled token and per decode step):

- nothing decoding: ``CAP_FACTOR × base`` (no stream to stall; the cap bounds a forward's memory);
- streams decoding: as many tokens as take ``STALL_STEPS`` decode steps' time to prefill, or that many
  times ``waiting / running`` when more requests wait than run (each waiting request's first token is
  worth a running one's next), never below ``base`` and never above the cap.

``base`` is ``--max-prefill-tokens``: what every step may prefill whatever the timings say (and the
budget until the first steps are timed). One step's prefill therefore stalls the running streams for at
most max(``base`` tokens, ``STALL_STEPS × max(1, waiting/running)`` decode steps).
"""

from __future__ import annotations

from dataclasses import dataclass

CAP_FACTOR = 8
STALL_STEPS = 4.0
SMOOTHING = 0.2  # weight of the newest sample in the moving averages


@dataclass
class PrefillBudget:
    base: int
    stall_steps: float = STALL_STEPS
    token_s: float | None = None  # seconds per prefilled token (padding included)
    step_s: float | None = None  # seconds per decode step

    @property
    def cap(self) -> int:
        return CAP_FACTOR * self.base

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        self.token_s = _average(self.token_s, seconds / max(1, tokens))

    def observe_decode(self, seconds: float) -> None:
        self.step_s = _average(self.step_s, seconds)

    def tokens(self, running: int, waiting: int) -> int:
        """The budget of the coming step with ``running`` rows decoding and ``waiting`` requests queued."""
        if running == 0:
            return self.cap
        if not self.token_s or self.step_s is None:
            return self.base
        stall_s = self.stall_steps * self.step_s * max(1.0, waiting / running)
        return max(self.base, min(self.cap, int(stall_s / self.token_s)))


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - SMOOTHING) * old + SMOOTHING * new


# A forward's fixed cost (reading every weight once, Python per layer) in prefilled tokens' worth: a
# decode step of one row costs about what prefilling 15-25 tokens does on the 2-core CPUs measured.
FORWARD_TOKENS = 16


def padding_groups(lengths: list[int], forward_tokens: int = FORWARD_TOKENS) -> list[list[int]]:
    """Split prompts admitted together (their new-token ``lengths``) into forwards: each forward pads its
    rows to its longest, so one 40-token prompt among 14-token ones would triple their cost. Sorted
    longest first, cut where the padding saved outweighs a forward's fixed cost (an exact partition of
    the sorted list minimising Σ (width × rows + ``forward_tokens``)). Returns indices into ``lengths``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted prompts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # the last group is sorted[i:j]; its width is its first (longest) one's
            cost = best[i] + lengths[order[i]] * (j - i) + forward_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]
