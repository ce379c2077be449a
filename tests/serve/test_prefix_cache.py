"""The prefix cache (issue 20): prompts sharing a system prompt reuse its K/V and prefill only the rest,
and answer exactly what they answer without the cache: alone, batched beside prompts without a hit,
through chunked prefill, and per adapter (an adapter's K/V differ from the base's). Hits are counted in
the worker's /metrics."""

from __future__ import annotations

import asyncio

import pytest
import torch

from tuneforge.serve.engine.base import SamplingParams

SYSTEM = [3 + (i * 11) % 87 for i in range(24)]  # the shared prefix (a system prompt's tokens)
TAILS = [[5, 9, 14], [40, 41, 42, 43, 44, 45, 46], [77, 20], [60, 61, 62, 63, 64]]
GREEDY = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def state(serving_models):
    from tuneforge.serve.worker import WorkerConfig, build_state

    adapters = {k: str(v) for k, v in serving_models.items() if k != "base"}
    state = build_state(
        WorkerConfig(
            str(serving_models["base"]), adapters, device="cpu", max_batch_size=8, max_prefill_tokens=16
        )
    )
    state.engine.start()
    yield state
    state.engine.stop()


async def _tokens(stream) -> list[int]:
    out = []
    async for delta in stream:
        assert delta.error is None, delta.error
        out += delta.token_ids
    return out


def _answers(engine, asks: list[tuple[str, list[int]]], batched: bool) -> list[list[int]]:
    async def run():
        if batched:
            streams = [engine.submit(v, p, GREEDY) for v, p in asks]
            return [await _tokens(s) for s in streams]
        return [await _tokens(engine.submit(v, p, GREEDY)) for v, p in asks]

    return asyncio.run(run())


def test_answers_with_the_prefix_cache_equal_those_without(state):
    engine = state.engine
    variants = list(engine.served.variants)  # the base and two adapters
    asks = [(v, SYSTEM + tail) for v in variants for tail in TAILS]
    asks.append((variants[0], [7, 8, 9, 10]))  # no shared prefix: a row without a hit in the batch
    # longer than the budget's cap with nothing running: its rest after the prefix is prefilled in chunks
    long_prompt = SYSTEM + [3 + (i * 5) % 89 for i in range(engine.budget.cap + 10)]

    size = engine.prefix_cache.max_tokens
    engine.prefix_cache.max_tokens = 0  # off
    alone, batched = _answers(engine, asks, False), _answers(engine, asks, True)
    long_alone = _answers(engine, [(variants[1], long_prompt)], False)
    assert alone == batched
    per_variant = {str(alone[i * len(TAILS) : (i + 1) * len(TAILS)]) for i in range(len(variants))}
    assert len(per_variant) == 3, "the adapters must change the answers for this test to mean anything"
    assert engine.prefix_cache.hits == 0

    engine.prefix_cache.max_tokens = size
    try:
        assert _answers(engine, asks, False) == alone  # learns each variant's prefix, then hits it
        hits = engine.prefix_cache.hits
        assert hits >= len(variants) * (len(TAILS) - 2), hits
        assert _answers(engine, asks, True) == alone
        assert engine.prefix_cache.hits >= hits + len(variants) * len(TAILS)
        with torch.inference_mode():  # idle now: no stale row may hold the prefix
            for t in engine.cache.keys + engine.cache.values:
                t.zero_()
        assert _answers(engine, [(variants[1], long_prompt)], False) == long_alone
    finally:
        engine.prefix_cache.drop()
    assert {e.variant for e in engine.prefix_cache.entries} == set()

    metrics = state.metrics.render().decode()
    for v in variants:
        assert f'tuneforge_prefix_cache_hits_total{{model="{v}"}}' in metrics
    tokens = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tuneforge_prefix_cache_hit_tokens_total{")
    )
    assert tokens == engine.prefix_cache.hit_tokens >= len(SYSTEM) * engine.prefix_cache.hits


def test_the_prefix_cache_keeps_its_token_bound_and_the_recent_entries():
    from tuneforge.serve.engine.prefix_cache import MIN_TOKENS, PrefixCache

    cache = PrefixCache(max_tokens=64)

    def kv(n):
        return [torch.zeros(1, n, 2)], [torch.zeros(1, n, 2)]

    for k in range(6):  # six different 20-token prefixes: at most three fit in 64 tokens
        prefix = [k] * 20
        assert cache.worth_learning("m", prefix + [1], 0) == 0  # seen once: nothing shared yet
        assert cache.worth_learning("m", prefix + [2], 0) == 20
        cache.store("m", prefix, *kv(20))
        assert sum(len(e.tokens) for e in cache.entries) <= 64
    assert [e.tokens[0] for e in cache.entries] == [3, 4, 5]
    assert cache.lookup("m", [5] * 20 + [9])[1] == 20
    assert cache.lookup("other", [5] * 20 + [9]) == (None, 0)  # another variant's K/V never serve
    assert cache.lookup("m", [5] * (MIN_TOKENS - 1) + [9]) == (None, 0)  # too short to be worth it
    assert cache.lookup("m", [5] * 20)[1] == 19  # the prompt's last token is always prefilled
