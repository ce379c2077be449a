"""Shared CLI pieces: consoles, JSON output, progress bars."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from tuneforge.errors import ConfigError

console = Console()
err_console = Console(stderr=True)

STAGES = {
    "download": "downloading",
    "extract": "extracting",
    "convert": "converting weights",
    "hash": "hashing files",
    "copy": "copying",
    "tokenize": "tokenizing",
    "read": "reading",
}


def print_json(obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (an undecodable file name): \u escapes print it
        text = json.dumps(obj, indent=2, default=str)
    sys.stdout.write(text + "\n")


def shown(value) -> str:
    """A user-supplied string for the console: Rich markup escaped (a role or file named "[/]" must
    print as itself, not raise MarkupError), control characters and undecodable bytes made visible."""
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() or c in "\t\n" else repr(c)[1:-1] for c in text)
    return escape(text.encode("utf-8", "backslashreplace").decode("utf-8"))


BYTE_STAGES = {"download", "extract", "read"}


class SizeColumn(DownloadColumn):
    """Bytes for stages that move bytes, counts for stages that count, nothing for the rest."""

    def render(self, task):
        if not task.total or task.total <= 1:
            return Text("")
        if task.fields.get("stage") in BYTE_STAGES:
            return super().render(task)
        return Text(f"{int(task.completed)}/{int(task.total)}", style="progress.download")


@contextmanager
def stage_progress(enabled: bool = True):
    """A callback ``(stage, done, total)`` drawing one Rich bar per stage (quiet when disabled)."""
    if not enabled:
        yield lambda *a: None
        return
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        SizeColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done, total) -> None:
            for other, task_id in tasks.items():
                if other != stage and not bar.tasks[task_id].finished:
                    t = bar.tasks[task_id]
                    bar.update(task_id, total=t.total or 1, completed=t.total or 1)
            if stage not in tasks:
                tasks[stage] = bar.add_task(STAGES.get(stage, stage), total=total, stage=stage)
            bar.update(tasks[stage], completed=done or 0, total=total)

        yield update
        for task_id in tasks.values():
            t = bar.tasks[task_id]
            bar.update(task_id, total=t.total or 1, completed=t.total or 1)


@contextmanager
def progress_lines(path: Path | None, every: float = 0.2):
    """A callback ``(stage, done, total)`` appending JSON lines ``{"stage", "done", "total"}`` to ``path``
    (quiet when None), at most one per ``every`` seconds within a stage: the control plane tails the file
    to show a pull's progress without importing the library that does the work."""
    if path is None:
        yield lambda *a: None
        return
    with open(path, "a", encoding="utf-8", buffering=1) as fh:
        last = {"stage": None, "at": 0.0, "line": None}

        def write(stage: str, done, total) -> None:
            line = json.dumps({"stage": stage, "done": done, "total": total})
            fh.write(line + "\n")
            last.update(at=time.monotonic(), line=None)

        def update(stage: str, done, total) -> None:
            now = time.monotonic()
            finished = total is not None and done is not None and done >= total
            if stage != last["stage"] and last["line"] is not None:
                write(*last["line"])  # the previous stage's last state, throttled away until now
            if stage != last["stage"] or finished or now - last["at"] >= every:
                write(stage, done, total)
            else:  # throttled: remembered, so the stage's last state is written before the next stage
                last["line"] = (stage, done, total)
            last["stage"] = stage

        yield update
        if last["line"] is not None:
            write(*last["line"])


def tee(*callbacks):
    """One progress callback calling several."""

    def update(stage: str, done, total) -> None:
        for callback in callbacks:
            callback(stage, done, total)

    return update


def parse_seconds(value: str | None, option: str) -> float | None:
    """90, 90s, 30m, 2h, 1d → seconds (None when not given)."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (value[:-1], value[-1]) if value[-1] in units else (value, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{option} {value!r}: use seconds or 30m, 2h, 1d.")
    return seconds
