"""A promotion's gate: ``METRIC>=VALUE`` parsed, and the decision on two evaluations' scores (pure: the
rollout in rollouts.py records it). The decision carries a code and params (platform/event_codes.py) with
both scores, so the CLI says it in English and the console in the user's language.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tuneforge.errors import ConfigError

from . import event_codes

METRICS = ("eval_loss", "perplexity", "rouge-1", "rouge-2", "rouge-l", "bleu-4")
LOWER_IS_BETTER = ("eval_loss", "perplexity")
GATE_RE = re.compile(r"^\s*([a-z0-9_-]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float

    def passes(self, score: float) -> bool:
        return {
            ">=": score >= self.value,
            "<=": score <= self.value,
            ">": score > self.value,
            "<": score < self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_gate(text: str) -> Gate:
    m = GATE_RE.match(text or "")
    hint = f"write it as METRIC>=VALUE or METRIC<=VALUE, METRIC one of {', '.join(METRICS)}"
    if m is None:
        raise ConfigError(f"gate {text!r}: {hint}")
    metric, op, value = m.group(1), m.group(2), m.group(3)
    if metric not in METRICS:
        raise ConfigError(f"gate {text!r}: unknown metric {metric!r}; {hint}")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"gate {text!r}: {value!r} is not a number; {hint}")
    return Gate(metric, op, number)


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: ``code`` and ``params`` (platform/event_codes.py) say why, with both scores."""

    passed: bool
    code: str
    params: dict

    @property
    def message(self) -> str:
        return event_codes.message(self.code, self.params)


def significant(score):
    """A score as a message shows it: four significant digits, still a number (the full one is in
    ``scores``)."""
    return float(f"{score:.4g}") if isinstance(score, float) else score


def decide(gate: Gate | None, candidate: dict, live: dict) -> Decision:
    """The candidate must pass the gate and do no worse than the live model on its metric (eval_loss when
    no gate is given); the params hold both scores."""
    metric = gate.metric if gate else "eval_loss"
    c, lv = candidate.get(metric), live.get(metric)
    if not isinstance(c, int | float) or not isinstance(lv, int | float):
        return Decision(False, code="gate_no_metric", params={"metric": metric, "candidate": c, "live": lv})
    both = {"metric": metric, "candidate": significant(c), "live": significant(lv)}
    if gate is not None and not gate.passes(c):
        return Decision(False, code="gate_failed", params={"gate": str(gate), **both})
    lower = metric in LOWER_IS_BETTER
    if (c > lv) if lower else (c < lv):
        return Decision(
            False, code="gate_worse_lower_better" if lower else "gate_worse_higher_better", params=both
        )
    if gate is None:
        return Decision(True, code="gate_passed_no_worse", params=both)
    return Decision(True, code="gate_passed", params={"gate": str(gate), **both})
