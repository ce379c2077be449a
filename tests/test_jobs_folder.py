"""The job folder's contract (jobs/folder.py): one module spells its names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tuneforge.jobs import folder as fmt

SRC = Path(fmt.__file__).resolve().parents[1]  # src/tuneforge

# Every file and folder name of the job folder, and every event kind, as folder.py declares them.
NAMES = {
    v
    for k, v in vars(fmt).items()
    if k.isupper() and isinstance(v, str) and k.endswith(("_FILE", "_DIR", "_LOG", "_SVG", "_STATE"))
}
EVENTS = {
    v
    for k, v in vars(fmt).items()
    if k.isupper() and isinstance(v, str) and v not in NAMES and re.fullmatch(r"[a-z_]+", v)
}

# Strings that spell a job-folder name but are not one; each says why.
ALLOWED = {
    # URL paths of the HTTP API, not paths in a job folder.
    ("platform/routes/jobs.py", "/{job_id}/checkpoints"),
    ("platform/routes/openai_ft.py", "/fine_tuning/jobs/{ftjob}/checkpoints"),
    # train.report_to: the name of an experiment tracker (TensorBoard), not the tensorboard/ folder.
    ("spec.py", "tensorboard"),
    # spec.py validates resume_from on its own, below jobs/ (spec may not import the folder format).
    ("spec.py", r"step-\d+"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _is_event_field(node: ast.AST) -> bool:
    """``x.get("event")`` or ``x["event"]``."""
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "event"
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == "event"
    )


def _constants(node: ast.AST) -> list[ast.Constant]:
    if isinstance(node, ast.Constant):
        return [node]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [c for e in node.elts for c in _constants(e)]
    return []


def _event_literals(tree: ast.AST) -> list[ast.Constant]:
    """Event kinds spelled where an event is written (``append_event(root, "x")``, ``folder.event("x")``,
    ``{"event": "x"}``) or compared with an event's kind (``e.get("event") == "x"``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("append_event", "event"):
                found += [c for a in node.args[:2] for c in _constants(a)]
                found += [c for k in node.keywords if k.arg in ("name", "event") for c in _constants(k.value)]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_event_field(s) for s in sides):
                found += [c for s in sides for c in _constants(s)]
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "event":
                    found += _constants(v)
    return [c for c in found if c.value in EVENTS]


def _spells_a_name(value: str) -> bool:
    if re.search(r"\s", value):  # prose: a message or help text that mentions a file, not a path
        return False
    if value == fmt.STEP_PREFIX or re.match(rf"{fmt.STEP_PREFIX}(\d|\\d)", value):
        return True  # f"step-{n}" or a checkpoint's name: fmt.step_name / fmt.STEP_RE
    return bool(NAMES & set(re.split(r"[/\\]", value)))


def literal_folder_names(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "jobs/folder.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and _spells_a_name(node.value)
                and (rel, node.value) not in ALLOWED
            ):
                problems.append(f"{rel}:{node.lineno}: {node.value!r}")
        problems += [f"{rel}:{c.lineno}: event {c.value!r}" for c in _event_literals(tree)]
    return problems


def test_the_contract_names_are_what_the_scan_looks_for():
    assert {
        "spec.yaml",
        "metrics.jsonl",
        "events.jsonl",
        "log.txt",
        "loss.svg",
        "final",
        "checkpoints",
    } <= NAMES
    assert {"exit_code.json", "worker.log", "tensorboard", "trainer_state.json"} <= NAMES
    assert {
        "started",
        "finished",
        "failed",
        "cancelled",
        "checkpoint_saved",
        "data_ready",
        "queued",
    } <= EVENTS
    assert not NAMES & EVENTS


def test_no_job_folder_name_is_spelled_outside_folder_py():
    problems = literal_folder_names(SRC)
    assert not problems, (
        "job-folder names spelled outside jobs/folder.py (use its constants, step_name or readers; "
        "a string that only looks like one goes in ALLOWED with the reason):\n" + "\n".join(problems)
    )


def test_the_scan_finds_each_kind_of_literal(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "folder.py").write_text('SPEC_FILE = "spec.yaml"\n')
    (tmp_path / "worker.py").write_text(
        '"""Writes spec.yaml (a docstring may say so)."""\n'
        "def run(root, folder, e, n):\n"
        '    (root / "spec.yaml").write_text("")\n'
        '    open(f"{root}/checkpoints/step-{n}")\n'
        '    folder.event("started", pid=1)\n'
        '    append_event(root, "finished")\n'
        '    print("see metrics.jsonl for the figures")\n'
        '    return e.get("event") in ("failed", "cancelled")\n'
    )
    found = sorted(p.split(": ", 1)[1] for p in literal_folder_names(tmp_path))
    assert found == sorted(
        [
            "'spec.yaml'",
            "'/checkpoints/step-'",
            "event 'started'",
            "event 'finished'",
            "event 'failed'",
            "event 'cancelled'",
        ]
    )
