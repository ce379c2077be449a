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
