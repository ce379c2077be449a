"""Summaries of lengths kept as counts of each length (a dataset's statistics, its histogram)."""

from __future__ import annotations

from collections import Counter


def summary_counts(counts: Counter) -> dict:
    """count/min/median/p95/max/total of the values ``counts`` holds (value → how many times)."""
    n = sum(counts.values())
    if not n:
        return {"count": 0}
    ordered = sorted(counts.items())

    def nth(k: int) -> int:
        seen = 0
        for value, times in ordered:
            seen += times
            if k < seen:
                return value
        return ordered[-1][0]

    return {
        "count": n,
        "min": ordered[0][0],
        "median": nth(n // 2),
        "p95": nth(min(n - 1, int(round(0.95 * (n - 1))))),
        "max": ordered[-1][0],
        "total": sum(v * t for v, t in ordered),
    }


def histogram(counts: Counter, bins: int = 12) -> dict:
    """Equal-width bins over the values ``counts`` holds: ``edges`` (bins + 1) and ``counts`` (the web
    console draws the token-length histogram from it)."""
    if not counts:
        return {"edges": [], "counts": []}
    low, high = min(counts), max(counts)
    width = max(1, -(-(high - low + 1) // bins))
    edges = [low + i * width for i in range(bins + 1)]
    out = [0] * bins
    for value, times in counts.items():
        out[min(bins - 1, (value - low) // width)] += times
    while len(out) > 1 and out[-1] == 0:  # no empty tail when the values span fewer bins
        out.pop()
        edges.pop()
    return {"edges": edges, "counts": out}
