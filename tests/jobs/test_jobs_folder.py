"""The job folder's contract (jobs/folder.py): one module spells its names, and the supervisor follows a
running job's report files from where it stopped reading."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

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
    ("platform/routes/jobs.py", "/{job_id}/logs"),
    ("platform/routes/deployments.py", "/{name}/logs"),
    ("cli/jobs.py", "/logs"),  # the tail of f"/api/v1/jobs/{job_id}/logs"
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


# -- the supervisor's tick: metrics.jsonl and events.jsonl read from the last offset


def _metric(step: int) -> bytes:
    return (json.dumps({"step": step, "loss": round(1 / step, 6), "lr": 1e-4}) + "\n").encode()


class _CountingReads:
    """Counts the bytes every file object opened through os.fdopen hands out (the job folder's readers)."""

    def __init__(self, monkeypatch):
        self.bytes = 0
        real = os.fdopen
        counter = self

        class File:
            def __init__(self, fh):
                self.fh = fh

            def read(self, *a):
                data = self.fh.read(*a)
                counter.bytes += len(data)
                return data

            def readline(self, *a):
                data = self.fh.readline(*a)
                counter.bytes += len(data)
                return data

            def __getattr__(self, name):
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        monkeypatch.setattr(os, "fdopen", lambda *a, **kw: File(real(*a, **kw)))

    def during(self, fn) -> int:
        before = self.bytes
        fn()
        return self.bytes - before


@pytest.fixture
def running_job(monkeypatch):
    """A platform with one job the executor reports as running (no process: the test writes its folder)."""
    from tuneforge.jobs.executor import Status
    from tuneforge.platform.app import build_platform
    from tuneforge.platform.db import Job
    from tuneforge.platform.jobs import create_job

    platform, _ = build_platform()
    job = create_job(platform, {"script": "unused"}, kind="scripted")
    with platform.store.session() as s:
        s.get(Job, job.id).state = "running"
    monkeypatch.setattr(platform.executor, "poll", lambda job_id: Status(running=True))

    def row():
        with platform.store.session() as s:
            return s.get(Job, job.id)

    yield platform, Path(job.folder), row
    platform.store.dispose()


def test_the_tick_reads_only_what_a_running_job_appended(running_job, monkeypatch):
    platform, root, row = running_job
    (root / fmt.METRICS_FILE).write_bytes(b"".join(_metric(n) for n in range(1, 50_001)))
    fmt.append_event(root, fmt.TRAINING, max_steps=60_000, step=0)
    reads = _CountingReads(monkeypatch)

    first = reads.during(platform.supervisor.tick)
    assert first >= (root / fmt.METRICS_FILE).stat().st_size
    assert row().step == 50_000 and row().max_steps == 60_000
    assert row().latest_metrics == {"step": 50_000, "loss": 2e-05, "lr": 1e-4}
    assert reads.during(platform.supervisor.tick) == 0  # nothing new: the 50,000 lines are not read again

    # Three whole lines and half of the next: only those bytes are read, the half line waits.
    half = _metric(50_004)
    appended = _metric(50_001) + _metric(50_002) + _metric(50_003) + half[:10]
    with open(root / fmt.METRICS_FILE, "ab") as fh:
        fh.write(appended)
    assert reads.during(platform.supervisor.tick) == len(appended)
    assert row().step == 50_003
    with open(root / fmt.METRICS_FILE, "ab") as fh:
        fh.write(half[10:])
    assert reads.during(platform.supervisor.tick) == len(half) - 10
    assert row().step == 50_004 and row().latest_metrics["loss"] == round(1 / 50_004, 6)

    # The worker's events are followed the same way: a new max_steps is picked up from the new line alone.
    line = fmt.append_event(root, fmt.TRAINING, max_steps=70_000, step=50_004)
    assert reads.during(platform.supervisor.tick) == len(json.dumps(line, ensure_ascii=False)) + 1
    assert row().max_steps == 70_000


def test_a_replaced_or_truncated_file_is_read_again_from_its_start(running_job):
    platform, root, row = running_job
    metrics = root / fmt.METRICS_FILE
    metrics.write_bytes(_metric(1) + _metric(2) + (json.dumps({"step": 2, "eval_loss": 0.5}) + "\n").encode())
    platform.supervisor.tick()
    assert row().latest_metrics == {"step": 2, "loss": 0.5, "lr": 1e-4, "eval_loss": 0.5}
    fresh = metrics.with_name("fresh")
    fresh.write_bytes(_metric(1))
    os.replace(fresh, metrics)  # another file: the eval_loss of the old one is gone
    platform.supervisor.tick()
    assert row().latest_metrics == {"step": 1, "loss": 1.0, "lr": 1e-4}
    metrics.write_bytes(b"")  # truncated in place
    platform.supervisor.tick()
    with open(metrics, "ab") as fh:
        fh.write(_metric(4))
    platform.supervisor.tick()
    assert row().latest_metrics == {"step": 4, "loss": 0.25, "lr": 1e-4}


def test_a_tail_skips_overlong_and_non_object_lines_and_reads_in_bounded_pieces(tmp_path):
    path = tmp_path / fmt.METRICS_FILE
    tail = fmt.JsonlTail(path)
    assert tail.poll() == ([], False)  # no file yet
    huge = b"x" * (fmt.MAX_LINE + 10)
    path.write_bytes(b'{"a": 1}\n3\n[1]\nnot json\n' + huge[: fmt.MAX_LINE // 2])
    assert tail.poll() == ([{"a": 1}], False)
    assert fmt.read_jsonl(path)[0] == [{"a": 1}]  # the paging reader skips the same lines
    with open(path, "ab") as fh:  # the rest of the endless line, then a good one
        fh.write(huge[fmt.MAX_LINE // 2 :] + b'\n{"b": 2}\n')
    assert tail.poll() == ([{"b": 2}], False)
    assert len(tail.partial) == 0
    # A budget: a poll reads at most max_bytes, the next one goes on from there.
    lines = b"".join(_metric(n) for n in range(1, 101))
    with open(path, "ab") as fh:
        fh.write(lines)
    got, _ = tail.poll(max_bytes=len(lines) // 2)
    rest, _ = tail.poll()
    assert [m["step"] for m in got + rest] == list(range(1, 101))


def test_a_tail_does_not_block_on_a_fifo(tmp_path):
    os.mkfifo(tmp_path / fmt.EVENTS_FILE)
    assert fmt.ProgressTail(tmp_path).poll() == {"step": 0, "max_steps": None, "latest_metrics": {}}


def test_a_line_nested_past_the_parser_is_skipped_and_the_lines_after_it_are_read(tmp_path):
    # a script's metrics.jsonl: 200k brackets are under MAX_LINE but past json's recursion limit
    path = tmp_path / fmt.METRICS_FILE
    path.write_bytes(b"[" * 200_000 + b'\n{"step": 1}\n' + b'{"a": ' * 100_000 + b'\n{"step": 2}\n')
    assert fmt.JsonlTail(path).poll() == ([{"step": 1}, {"step": 2}], False)
    assert fmt.read_jsonl(path)[0] == [{"step": 1}, {"step": 2}]  # GET …/metrics pages: no 500


def test_safe_path_refuses_a_name_past_the_system_limits(tmp_path):
    (tmp_path / "a").write_text("x")
    assert fmt.safe_path(tmp_path, "a" * 5000) is None  # ENAMETOOLONG, not an OSError (a 500)
    assert fmt.safe_path(tmp_path, "a/" * 3000) is None
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert fmt.safe_path(tmp_path, "loop/x") is None
    assert fmt.safe_path(tmp_path, "a") == (tmp_path / "a").resolve()


def test_nan_and_infinite_numbers_are_read_as_null(tmp_path):
    # the trainer writes a diverged loss with Python's json.dumps: NaN; a strict JSON answer (GET …/metrics,
    # …/checkpoints), PostgreSQL's JSON column and the console's JSON.parse all refuse it
    path = tmp_path / fmt.METRICS_FILE
    path.write_text('{"step": 1, "loss": NaN, "lr": Infinity, "g": -Infinity, "x": 1e999, "ok": 0.5}\n')
    expected = [{"step": 1, "loss": None, "lr": None, "g": None, "x": None, "ok": 0.5}]
    assert fmt.read_jsonl(path)[0] == expected
    json.dumps(fmt.read_jsonl(path)[0], allow_nan=False)  # what Starlette's JSONResponse does
    tail = fmt.ProgressTail(tmp_path)
    assert tail.poll()["latest_metrics"] == {"step": 1, "ok": 0.5}
