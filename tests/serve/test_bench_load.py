"""bench/serve_throughput.py's load generator does what the issue's load says: N closed-loop clients,
each prompt sent once, starts staggered, a client's next request sent as soon as its previous one
finished, never more than N in flight (no server: a fake ``send``)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

from tests.support.paths import ROOT


def _bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # the script imports its sibling dedup_check
    spec = importlib.util.spec_from_file_location("serve_throughput", ROOT / "bench" / "serve_throughput.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "serve_throughput", module)
    spec.loader.exec_module(module)
    return module


def test_closed_loop_staggered_clients_send_each_prompt_once(monkeypatch):
    bench = _bench(monkeypatch)
    prompts = bench.level_prompts(32)
    assert len(set(prompts)) == 32, "32 varied prompts per level"
    events: list[tuple[str, float, int]] = []  # kind, time, requests in flight
    in_flight, peak = 0, 0

    async def send(prompt: str):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        events.append(("start", asyncio.get_running_loop().time(), in_flight))
        await asyncio.sleep(0.01 * (1 + len(prompt) % 3))  # answers of different lengths
        in_flight -= 1
        events.append(("end", asyncio.get_running_loop().time(), in_flight))
        return prompt.upper()

    results, wall = asyncio.run(bench.closed_loop(4, prompts, send, stagger_s=0.005))
    assert results == [p.upper() for p in prompts], "every prompt answered once, in prompt order"
    assert peak == 4, f"4 clients keep 4 requests in flight, saw at most {peak}"
    # the k-th client's first request is the first one sent with k in flight: starts are staggered
    first_with = {n: t for kind, t, n in reversed(events) if kind == "start"}
    assert first_with[4] - first_with[1] >= 3 * 0.005, "the 4 clients did not start staggered"
    # closed loop: after the starts, each request is sent right as another one ends (same loop turn)
    later = [i for i, (kind, _, n) in enumerate(events) if kind == "start" and n == 4][1:]
    assert later and all(events[i - 1][0] == "end" for i in later)
    assert wall >= 0.08
