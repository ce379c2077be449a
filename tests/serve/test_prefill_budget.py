"""The prefill budget policy (issue 20): the cap with nothing decoding, ``base`` until steps are timed,
then as many tokens as take ``STALL_STEPS`` decode steps (times waiting/running when more wait than
run), never below ``base`` nor above the cap. The engine's forwards keep to it:
tests/serve/test_chunked_prefill.py."""

from __future__ import annotations

import pytest

from tuneforge.serve.engine.prefill_budget import CAP_FACTOR, STALL_STEPS, PrefillBudget


def test_the_budget_grows_only_within_its_stall_bound():
    budget = PrefillBudget(base=16)
    assert budget.tokens(running=0, waiting=5) == budget.cap == CAP_FACTOR * 16  # no stream to stall
    assert budget.tokens(running=2, waiting=5) == 16  # not timed yet
    budget.observe_prefill(tokens=100, seconds=1.0)  # 10 ms a token
    budget.observe_decode(seconds=0.1)  # a decode step prefills 10 tokens' time
    assert budget.tokens(running=4, waiting=1) == int(STALL_STEPS * 10)
    assert budget.tokens(running=2, waiting=4) == int(STALL_STEPS * 10 * 2)  # twice as many wait as run
    assert budget.tokens(running=1, waiting=100) == budget.cap
    for running, waiting in [(1, 1), (3, 2), (2, 5), (8, 40)]:
        stall_s = budget.tokens(running, waiting) * budget.token_s
        bound_s = STALL_STEPS * budget.step_s * max(1, waiting / running)
        assert stall_s <= bound_s + 1e-9 or budget.tokens(running, waiting) == budget.base
    budget.observe_prefill(tokens=10, seconds=6.0)  # prefill got slow: the moving average follows
    assert budget.token_s == pytest.approx(0.8 * 0.01 + 0.2 * 0.6)
    assert budget.tokens(running=4, waiting=1) == 16  # base, whatever the timings say


def test_prompts_admitted_together_are_split_where_padding_costs_more_than_a_forward():
    from tuneforge.serve.engine.prefill_budget import padding_groups

    assert padding_groups([]) == []
    assert padding_groups([12, 14, 13]) == [[1, 2, 0]]  # alike: one forward, longest first
    # one long prompt among short ones: padding them to 60 would cost 5 x 46 tokens, a forward 16
    assert padding_groups([14, 60, 13, 14, 12, 14], forward_tokens=16) == [[1], [0, 3, 5, 2, 4]]
    assert padding_groups([14, 60, 13], forward_tokens=1000) == [[1, 0, 2]]  # forwards dear: never split
