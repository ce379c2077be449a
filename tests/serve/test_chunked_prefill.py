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


def fix_timings(engine, monkeypatch, token_s: float = 1.0) -> None:
    """The budget policy's timings fixed (a decode step 0.1 s, a prefilled token ``token_s``): the
    default keeps its budget at ``BUDGET`` while a stream runs, whatever this machine's timings."""
    monkeypatch.setattr(engine.budget, "observe_prefill", lambda *a: None)
    monkeypatch.setattr(engine.budget, "observe_decode", lambda *a: None)
    monkeypatch.setattr(engine.budget, "token_s", token_s)
    monkeypatch.setattr(engine.budget, "step_s", 0.1)


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

    fix_timings(engine, monkeypatch)
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


@pytest.mark.parametrize("token_s", [0.001, 1.0])
def test_each_prefill_keeps_to_the_budget_policy(engine, monkeypatch, token_s):
    """With prefill timed cheap (1 ms a token against 100 ms a decode step) the budget grows past
    ``BUDGET`` and 20-token prompts arriving beside a running stream are prefilled whole; timed dear
    (1 s a token), it stays at ``BUDGET`` and they are chunked. Either way no forward exceeds the budget
    the policy gave its step."""
    base = engine.served.base_id
    fix_timings(engine, monkeypatch, token_s)
    monkeypatch.setattr(engine.prefix_cache, "max_tokens", 0)  # every prompt prefilled whole here
    events: list[tuple] = []  # ("budget", tokens) and ("forward", rows, width), in order
    plain_tokens, plain_forward = engine.budget.tokens, engine._forward

    def recording_tokens(running, waiting):
        events.append(("budget", plain_tokens(running, waiting)))
        return events[-1][1]

    def recording_forward(input_ids, *args):
        events.append(("forward", *input_ids.shape))
        return plain_forward(input_ids, *args)

    async def scenario():
        running = engine.submit(
            base, [5, 6, 7], SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
        )
        started = asyncio.Event()
        first = asyncio.create_task(_tokens(running, started))
        await started.wait()
        prompts = [[3 + (i * k) % 90 for i in range(BUDGET + 4)] for k in (3, 5, 7)]
        streams = [engine.submit(base, p, SamplingParams(max_tokens=2, ignore_eos=True)) for p in prompts]
        return [await _tokens(s) for s in streams], await first

    monkeypatch.setattr(engine.budget, "tokens", recording_tokens)
    monkeypatch.setattr(engine, "_forward", recording_forward)
    answers, first = asyncio.run(scenario())
    monkeypatch.setattr(engine, "_forward", plain_forward)
    assert len(first) == 40 and [len(a) for a in answers] == [2, 2, 2]
    given, prefills = None, []
    for event in events:
        if event[0] == "budget":
            given = event[1]
        elif event[2] > 1 and event[1:] != (1, 3):  # a prefill of the burst
            assert event[1] * event[2] <= given, events
            prefills.append(event[1:])
    if token_s < 0.01:
        assert all(width == BUDGET + 4 for _, width in prefills), prefills  # whole prompts
    else:
        assert sorted(width for _, width in prefills) == [4, 4, 4, BUDGET, BUDGET, BUDGET], prefills
