"""Model pulls and imports run by worker processes: waited for, or in a background thread with progress.

Each worker holds a model or a tokenizer in memory (hundreds of MB), so a server runs a bounded number of
each kind at once: pulls past the limit are refused, token reports wait their turn (``report_slots``).

Pulling and importing load weights with torch, so they run as ``tuneforge models pull|import … --json``
worker processes, never in the server. An asynchronous pull runs that worker in a thread and passes it
``--progress-file``: the worker appends JSON lines ``{stage, done, total}`` there and a GET reads the
last one. Pulls live in memory: a restarted server forgets them (the models they made stay in the store).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError, NotFoundError, ResourceError, TuneforgeError
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.executor import worker_argv

from . import catalog
from .context import Platform

log = logging.getLogger(__name__)

KEEP_FINISHED = 50  # finished pulls remembered for their GET; older ones are forgotten
WORKER_TIMEOUT = 3600


def run_worker(ctx: Platform, args: list[str], progress_file: Path | None = None) -> dict:
    """Run ``tuneforge ARGS --json`` as a worker process; its JSON answer, or its error raised again.

    ``args`` are ``models pull|import [options] -- VALUE``: the output options go before the ``--``."""
    env = {**os.environ, "TUNEFORGE_HOME": str(ctx.home)}
    cut = args.index("--")
    extra = ["--json"] + (["--progress-file", str(progress_file)] if progress_file else [])
    try:
        argv = worker_argv(*args[:cut], *extra, *args[cut:])
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=WORKER_TIMEOUT)
    except ValueError as exc:  # a NUL byte in the name or path cannot be an argument
        raise ConfigError(f"not a usable model name or path: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ResourceError(f"the worker ran past {WORKER_TIMEOUT} s and was stopped") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["the worker failed"])[-1]
        error = ConfigError if proc.returncode == 2 else ResourceError
        raise error(last.removeprefix("error: "))
    return json.loads(proc.stdout)


def last_progress(path: Path) -> dict | None:
    """The last complete JSON line of a progress file (the writer may be mid-line)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        # the job folder's one line reader: a corrupt or too-deep line is skipped, not a RecursionError
        value = fmt.json_record(line.encode())
        if value is not None and "stage" in value:
            return value
    return None


@dataclass
class Pull:
    id: str
    name: str
    key: tuple
    args: list[str]
    progress_file: Path
    state: str = "running"
    stage: str | None = None
    done: float | None = None
    total: float | None = None
    error: str | None = None
    model: dict | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    failure: TuneforgeError | None = None  # what a caller waiting for the pull raises
    ended: threading.Event = field(default_factory=threading.Event)

    def as_dict(self) -> dict:
        if self.state == "running":
            self._read_progress()
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "model": self.model,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def _read_progress(self) -> None:
        line = last_progress(self.progress_file)
        if line:
            self.stage, self.done, self.total = line.get("stage"), line.get("done"), line.get("total")


class Pulls:
    """The pulls of one control plane: at most a few at once, one per model name."""

    def __init__(self, ctx: Platform):
        self.ctx = ctx
        self.lock = threading.Lock()
        self.pulls: dict[str, Pull] = {}
        self.folder = ctx.home / "pulls"

    def start(self, key: tuple, name: str, args: list[str]) -> Pull:
        """A running pull with the same key, or a new one started in a thread."""
        limit = self.ctx.max_pulls
        with self.lock:
            running = [p for p in self.pulls.values() if p.state == "running"]
            for pull in running:
                if pull.key == key:
                    return pull
            self.folder.mkdir(parents=True, exist_ok=True)
            if (
                len(running) >= limit
            ):  # counted under the lock: a pull ends (state) and frees its place at once
                raise ResourceError(
                    f"{len(running)} model pulls/imports are running, the most this server runs at once; "
                    f"wait for one to finish ({', '.join(p.name for p in running)}) and try again"
                )
            pull_id = "pull-" + secrets.token_hex(6)
            pull = Pull(pull_id, name, key, args, self.folder / f"{pull_id}.jsonl")
            self.pulls[pull_id] = pull
            self._forget_old()
        threading.Thread(target=self._run, args=(pull,), name=pull_id, daemon=True).start()
        return pull

    def get(self, pull_id: str) -> dict:
        with self.lock:
            pull = self.pulls.get(pull_id)
            if pull is None:
                raise NotFoundError(f"no pull {pull_id!r} (a server restart forgets pulls; list the models)")
            return pull.as_dict()

    def list(self) -> list[dict]:
        with self.lock:
            newest = sorted(self.pulls.values(), key=lambda p: p.started_at, reverse=True)
            return [p.as_dict() for p in newest]

    def _run(self, pull: Pull) -> None:
        model, error, failure = None, None, None
        try:
            model = run_worker(self.ctx, pull.args, pull.progress_file)
            catalog.sync_models(self.ctx.store)
        except TuneforgeError as exc:
            error, failure = str(exc), exc
        except Exception as exc:  # a thread's crash would otherwise leave the pull running forever
            log.exception("model pull %s failed", pull.id)
            error = f"the pull failed: {type(exc).__name__}: {exc}"
            failure = ResourceError(error)
        with self.lock:
            pull._read_progress()
            pull.model, pull.error, pull.failure = model, error, failure
            pull.state = "failed" if error else "succeeded"
            pull.finished_at = time.time()
            pull.progress_file.unlink(missing_ok=True)
        pull.ended.set()

    def wait(self, pull: Pull) -> dict:
        """The pulled model's record once ``pull`` ends; its error raised again if it failed."""
        if not pull.ended.wait(WORKER_TIMEOUT + 60):
            raise ResourceError(f"pull {pull.id} did not end within {WORKER_TIMEOUT} s")
        if pull.failure is not None:  # a fresh exception per waiting caller: one shared would grow a
            raise type(pull.failure)(str(pull.failure))  # traceback holding every caller's frames
        return pull.model

    def _forget_old(self) -> None:
        finished = [p for p in self.pulls.values() if p.state != "running"]
        finished.sort(key=lambda p: p.started_at)
        for pull in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.pulls[pull.id]
