"""GRPO's format reward against hostile regexes: a search that backtracks catastrophically is bounded."""

from __future__ import annotations

import time

from tuneforge.spec import RewardSpec
from tuneforge.train.rewards import FORMAT_TIMEOUT_S, format_reward


def test_a_catastrophic_format_regex_scores_0_within_its_bound_and_the_next_completion_still_scores(caplog):
    # (a|aa)+$ against 60 a's and a b: about 1.6^60 steps in `re`, i.e. a job that never ends
    spec = RewardSpec.model_validate({"format": r"^(a|aa)+$"})
    started = time.monotonic()
    assert format_reward(spec.regex)(["a" * 60 + "b", "aaaa"]) == [0.0, 1.0]
    assert time.monotonic() - started < 10 + 4 * FORMAT_TIMEOUT_S
    assert "took over" in caplog.text and "scored 0" in caplog.text


def test_a_hostile_format_regex_is_checked_by_the_spec_without_a_crash_or_a_memory_blow_up():
    # the spec is checked on the control plane, in the request: re parses these in microseconds
    import pytest

    with pytest.raises(ValueError, match="format regex"):
        RewardSpec.model_validate({"format": "(" * 400})
    assert RewardSpec.model_validate({"format": "(?:(?:(?:a{999}){999}){999}){999}"}).regex
