"""Chunked prefill (issue 20): a long prompt arriving while a stream runs is prefilled in chunks of at
most ``max_prefill_tokens``, one chunk between two decode steps, so the running stream's gap between
two tokens holds a budget's worth of prefill, not the whole prompt; the chunked answer is the one a
whole prefill gives. Asserted on the engine's forwards (their shapes), not on wall time."""

from __future__ import annotations

import asyncio

import pytest

from tuneforge.serve.engine.base import SamplingParams

BUDGET = 16


@pytest.fixture(scope="module")
def engine(serving_models):
    from tuneforge.serve.worker import WorkerConfig, build_state

    model = str(serving_models["base"])
    config = WorkerConfig(model, device="cpu", max_batch_size=4, max_prefill_tokens=BUDGET)
    engine = build_state(config).engine
    engine.start()
    yield engine
    engine.stop()


async def _tokens(stream, started: asyncio.Event | None = None) -> list[int]:
    out = []
    async for delta in stream:
        out += delta.token_ids
        if started is not None and len(out) >= 2:
            started.set()
        assert delta.error is None, delta.error
    return out


async def _answer(engine, prompt: list[int], params: SamplingParams) -> list[int]:
    return await _tokens(engine.submit(engine.served.base_id, prompt, params))


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(engine, monkeypatch):
    base = engine.served.base_id
    long_prompt = [3 + (i * 7) % 90 for i in range(5 * BUDGET + 5)]  # 6 chunks, the last of 5
    greedy = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    forwards: list[tuple[int, int]] = []  # (rows, tokens per row) of each forward, in order
    plain_forward = engine._forward

    def recording_forward(input_ids, *args):
        forwards.append(tuple(input_ids.shape))
        return plain_forward(input_ids, *args)

    async def scenario():
        stream_on = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
        running = engine.submit(base, [5, 6, 7], stream_on)
        started = asyncio.Event()
        first = asyncio.create_task(_tokens(running, started))
        await started.wait()  # the stream decodes now; the long prompt arrives
        chunked = await _tokens(engine.submit(base, long_prompt, greedy))
        return chunked, await first

    monkeypatch.setattr(engine, "_forward", recording_forward)
    chunked, first = asyncio.run(scenario())
    monkeypatch.setattr(engine, "_forward", plain_forward)
    assert len(first) == 40 and len(chunked) == 6
    prefills = [i for i, (rows, width) in enumerate(forwards) if width > 1]
    assert all(rows * width <= BUDGET for rows, width in (forwards[i] for i in prefills)), forwards
    chunks = [i for i in prefills if forwards[i] != (1, 3)]  # the long prompt's forwards
    assert len(chunks) == 6, forwards
    # a decode step of the running stream between any two chunks: its tokens keep coming
    between = [forwards[a + 1 : b] for a, b in zip(chunks, chunks[1:], strict=False)]
    assert all(any(width == 1 for _, width in steps) for steps in between), forwards

    # the same prompt prefilled whole (a budget above its length) answers the same tokens
    engine.config.max_prefill_tokens = 4096
    try:
        whole = asyncio.run(_answer(engine, long_prompt, greedy))
    finally:
        engine.budget.base = BUDGET
    assert whole == chunked


def test_a_cancelled_chunked_prompt_frees_its_row(engine, monkeypatch):
    base = engine.served.base_id
    plain_chunk = engine._prefill_chunk

    def chunk_then_leave():  # the client leaves after the first chunk
        seq = engine._chunked
        plain_chunk()
        engine.cancel(seq.stream)

    async def scenario():
        # longer than the budget's cap (nothing else runs, so the budget is the cap)
        prompt = [3 + i % 90 for i in range(engine.budget.cap + BUDGET)]
        stream = engine.submit(base, prompt, SamplingParams(max_tokens=4))
        deltas = [d async for d in stream]
        monkeypatch.setattr(engine, "_prefill_chunk", plain_chunk)
        after = await _answer(engine, [5, 6, 7], SamplingParams(max_tokens=3, ignore_eos=True))
        return deltas, after

    monkeypatch.setattr(engine, "_prefill_chunk", chunk_then_leave)
    deltas, after = asyncio.run(scenario())
    assert [d.finish_reason for d in deltas] == ["abort"] and len(after) == 3
    assert engine._chunked is None and engine.stats().running == 0
