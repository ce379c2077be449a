"""The codes the server gives its data-check problems and deployment events, and the console's messages
for them: every code raised in data/ is in data/problem_codes.py, and every code of that table and of
platform/event_codes.py has an English entry (the table's own text) and a Chinese one with the same
placeholders."""

from __future__ import annotations

import ast
import json
import re
import string

import pytest

from tests.support.paths import ROOT
from tuneforge.data import problem_codes
from tuneforge.platform import event_codes

WEB = ROOT / "src" / "tuneforge" / "web"
DATA = ROOT / "src" / "tuneforge" / "data"
# call → the position of its code argument: problem(code, …), probs.add(field, code, …),
# probs.at(field, code, …), RecordError(code, …), JsonLimitError(code, …)
CODE_ARGUMENT = {"problem": 0, "add": 1, "at": 1, "RecordError": 0, "JsonLimitError": 0}


def _catalog(lang: str) -> dict:
    return json.loads((WEB / "i18n" / f"{lang}.json").read_text())


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _codes_raised_in_data() -> tuple[set[str], list[str]]:
    """(the literal codes data/ passes to the calls above, every Problem(...) built by hand)."""
    codes, by_hand = set(), []
    for path in DATA.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = getattr(func, "id", None) or getattr(func, "attr", "")
            if name == "Problem" and path.name != "problem_codes.py":
                by_hand.append(f"{path.name}:{node.lineno}")
            at = CODE_ARGUMENT.get(name)
            if at is not None and len(node.args) > at and isinstance(node.args[at], ast.Constant):
                if isinstance(node.args[at].value, str):
                    codes.add(node.args[at].value)
    return codes, by_hand


def test_every_problem_raised_in_data_has_a_code_in_the_table():
    codes, by_hand = _codes_raised_in_data()
    assert not by_hand, f"Problem(...) without a code (use problem_codes.problem): {by_hand}"
    assert len(codes) > 60, sorted(codes)  # the walk sees the raise sites
    assert not codes - set(problem_codes.MESSAGES), sorted(codes - set(problem_codes.MESSAGES))


STEPS = ("add_event", "_save", "_fail")  # what records a promotion's event in rollouts.py


def _strings(node) -> set[str]:
    """A literal string, or those of either branch of ``A if … else B``."""
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    return {node.value} if isinstance(node, ast.Constant) and isinstance(node.value, str) else set()


def _codes_given_in(path) -> set[str]:
    """The literal codes a module passes as ``code=…`` or assigns to ``code``."""
    codes = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "code":
            codes |= _strings(node.value)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "code" for t in node.targets):
            codes |= _strings(node.value)
    return codes


def test_every_promotion_step_and_decision_has_a_code_in_the_table():
    """rollouts.py and gate.py say each step, decision and failure as a code of platform/event_codes.py (the
    console says it in the user's language); no English sentence of their own."""
    platform = ROOT / "src" / "tuneforge" / "platform"
    codes = _codes_given_in(platform / "rollouts.py") | _codes_given_in(platform / "gate.py")
    assert len(codes) >= 20, sorted(codes)  # the walk sees the steps, decisions and failures
    assert not codes - set(event_codes.MESSAGES), sorted(codes - set(event_codes.MESSAGES))
    steps = [
        node
        for node in ast.walk(ast.parse((platform / "rollouts.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in STEPS
    ]
    without = [c.lineno for c in steps if not any(k.arg == "code" for k in c.keywords)]
    assert len(steps) >= 8 and not without, f"rollouts.py: events without a code at lines {without}"


@pytest.mark.parametrize(
    "prefix, table",
    [("problem", problem_codes.MESSAGES), ("deployment_event", event_codes.MESSAGES)],
    ids=["data-problems", "deployment-events"],
)
def test_every_code_has_its_english_text_and_chinese_with_the_same_placeholders(prefix, table):
    en, zh = _catalog("en"), _catalog("zh")
    for code, template in table.items():
        key = f"{prefix}.{code}"
        english = template.replace("{{", "{").replace("}}", "}")  # the table's text, as the console fills it
        assert en.get(key) == english, f"{key}: en.json says {en.get(key)!r}, the table {english!r}"
        assert key in zh and re.search(r"[\u4e00-\u9fff]", zh[key]), f"{key}: no Chinese message"
        # Chinese may leave out an English-only detail (eval_overlap's examples), never invent one
        said = set(re.findall(r"\{(\w+)\}", zh[key]))
        assert said <= _placeholders(template), f"{key}: {said - _placeholders(template)} are no params"


def test_a_problem_carries_its_code_and_params_beside_the_english_message():
    p = problem_codes.problem("missing_field", file="a.json", line=3, record=3, field="output", key="output",
                              format="alpaca")  # fmt: skip
    assert p.to_dict() == {
        "message": "expected 'output' (string) in alpaca record; got nothing. Add the field or map another "
        "column with --map output=COLUMN.",
        "file": "a.json", "line": 3, "record": 3, "field": "output",
        "code": "missing_field", "params": {"key": "output", "format": "alpaca"},
    }  # fmt: skip
    assert str(p).startswith("a.json line 3 record 3 field 'output': expected 'output'")  # the CLI's line
