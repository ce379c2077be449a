"""The job folder's format: file names, event kinds and torch-free readers.

The training worker (``train/reporting.py``) writes these files and the control plane reads them; both
take the names from here so they cannot drift. Only the standard library is imported.

Long because: it is the one module that names the folder's files and reads and writes them
(tests/jobs/test_jobs_folder.py holds every other module to it); cut apart, the names would drift again.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import threading
import time
from pathlib import Path

SPEC_FILE = "spec.yaml"
LOG_FILE = "log.txt"  # the worker's own INFO log (written during the recipe)
WORKER_LOG = "worker.log"  # stdout+stderr of every attempt, written by the executor
METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
TENSORBOARD_DIR = "tensorboard"
LOSS_SVG = "loss.svg"
BEST_FILE = "best.json"  # the checkpoint train.select chose: {"checkpoint": "step-N", metric, mode, value}
EXIT_CODE_FILE = "exit_code.json"  # a command job's exit code, written by its runner (command_runner.py)
STEP_PREFIX = "step-"  # checkpoints/step-N/: a complete checkpoint, renamed into place
STEP_RE = re.compile(rf"^{STEP_PREFIX}(\d+)$")
TRAINER_STATE = "trainer_state.json"  # in every step-N/ the trainer saved; one without it is not resumed
RAY_TRAIN_DIR = "ray-train"  # Ray Train's run state (its storage_path); the weights stay in checkpoints/
STOP_REQUEST = "stop-requested"  # a Ray Train driver's SIGTERM, for its workers (train/ray_train.py)
LOGS_DIR = "logs"  # logs/rank-N.txt: each rank's own output when a job runs several (jobs/ranks.py)
RANK_LOG = "rank-{rank}.txt"

# Events the worker writes ...
STARTED, DATA_READY, EPOCH_DONE, EVAL_DONE = "started", "data_ready", "epoch_done", "eval_done"
TRAINING = "training"  # the trainer's loop begins: carries max_steps
TRACKER = "tracker"  # an experiment tracker's run (train.report_to): tool, run_id, url (None offline)
BEST_CHECKPOINT = "best_checkpoint"  # train.select marked a new best checkpoint (the BEST_FILE record)
EVAL_OVERLAP = "eval_overlap"  # the evaluation set overlaps training past data.eval_overlap.max_share
CHECKPOINT_SAVED, FINISHED, FAILED, CANCELLED = "checkpoint_saved", "finished", "failed", "cancelled"
# ... and those the control plane adds to the same stream.
QUEUED, LAUNCHED, RESTARTING, RECONCILED, CANCEL_REQUESTED = (
    "queued",
    "launched",
    "restarting",
    "reconciled",
    "cancel_requested",
)
# A command job (a user's own script) reports no events itself: the control plane writes these for it.
EXITED, TIME_LIMIT = "exited", "time_limit"
MOUNTS = "mounts"  # the runner says whether the read-only mounts are enforced (and why not)
ENDINGS = (FINISHED, FAILED, CANCELLED)


# A command job's script can write its own job folder: the report files it could replace with a FIFO
# (a reader blocks for ever), a symlink (to a file it may not read) or one endless line are opened
# without following links, without blocking, as regular files only, and read in bounded pieces.
_SAFE = os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
MAX_LINE = 1 << 20


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o644):
    fd = os.open(path, flags | _SAFE, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def append_event(root: Path, name: str, **fields) -> dict:
    """One JSON line; a single small ``write`` on an O_APPEND file, so two writers never interleave."""
    record = {"time": time.time(), "event": name, **fields}
    line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
    path = Path(root) / EVENTS_FILE
    for attempt in range(3):
        try:
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            break
        except OSError:
            # A FIFO, link or folder put there by a job's script: moved aside, the events go on in a new
            # file (a script that keeps planting wins three times at most, then the error is raised).
            if attempt == 2 or (path.is_file() and not path.is_symlink()) or not os.path.lexists(path):
                raise
            os.replace(path, path.with_name(f"{EVENTS_FILE}.planted-{time.time_ns()}"))
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return record


def write_exit_code(root: Path, attempt: int, exit_code: int) -> None:
    """Record how an attempt's command ended, atomically (a reader never sees half a file).

    The runner writes it before it exits, so a control plane that re-attached to the job after a restart
    (and so is not the runner's parent) still learns the code.
    """
    write_json_atomic(
        Path(root) / EXIT_CODE_FILE, {"attempt": attempt, "exit_code": exit_code, "time": time.time()}
    )


def write_best(root: Path, record: dict) -> None:
    """Mark the best checkpoint so far, atomically (the platform may read it while training goes on)."""
    write_json_atomic(Path(root) / BEST_FILE, record)


def write_json_atomic(target: Path, data) -> None:
    """``data`` as JSON at ``target``, replaced whole: a reader (or a crash) sees the old file or the new."""
    part = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
    part.write_text(json.dumps(data))
    os.replace(part, target)


def read_best(root: Path) -> dict | None:
    """The best checkpoint's record when train.select marked one and that checkpoint still exists."""
    try:
        with os.fdopen(open_regular(Path(root) / BEST_FILE), "rb") as fh:
            record = json_record(fh.read(4096))
    except OSError:
        return None
    name = (record or {}).get("checkpoint")
    if not isinstance(name, str) or not STEP_RE.match(name):
        return None
    if not (Path(root) / CHECKPOINTS_DIR / name).is_dir():  # gone (deleted by hand): nothing to point at
        return None
    return record


def read_exit_code(root: Path, attempt: int) -> int | None:
    """The exit code the runner recorded for ``attempt``; None when there is none (or it is another's)."""
    try:
        with os.fdopen(open_regular(Path(root) / EXIT_CODE_FILE), "rb") as fh:
            record = json.loads(fh.read(4096))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("attempt") != attempt:
        return None
    code = record.get("exit_code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def read_jsonl(path: Path, offset: int = 0, limit: int = 1000) -> tuple[list[dict], int]:
    """Complete JSON lines from byte ``offset``; returns them and the offset after the last one read.

    A line still being written (no newline yet) is left for the next call; a corrupt line is skipped.
    """
    out: list[dict] = []
    try:
        fh = os.fdopen(open_regular(path), "rb")
    except OSError:
        return out, offset
    with fh:
        if offset >= os.fstat(fh.fileno()).st_size:  # nothing yet; a client's offset past a C long made
            return out, offset  # seek raise (a 500)
        fh.seek(offset)
        while len(out) < limit:
            line = fh.readline(MAX_LINE)
            if len(line) == MAX_LINE and not line.endswith(b"\n"):  # no record is this long: skip it
                offset += len(line)
                continue
            if not line or not line.endswith(b"\n"):
                break
            offset += len(line)
            if (record := json_record(line)) is not None:
                out.append(record)
    return out, offset


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def json_record(line: bytes) -> dict | None:
    """A line's JSON object; None for a corrupt line or one that holds no object (both are skipped).

    NaN, Infinity and a number past a float (1e999) are read as null: a diverged run's loss is written as
    ``NaN`` (Python's json), which no strict JSON answer, PostgreSQL's JSON nor the console can carry."""
    try:
        value = json.loads(line, parse_constant=lambda _: None, parse_float=_finite)
    except (ValueError, RecursionError):  # RecursionError: ``[[[…`` nested deeper than the parser recurses
        return None
    return value if isinstance(value, dict) else None


def read_all_jsonl(path: Path) -> list[dict]:
    records, _ = read_jsonl(path, 0, limit=10**9)
    return records


def read_bytes(path: Path, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
    """At most ``limit`` bytes of a growing file from ``offset``; returns them and the next offset."""
    try:
        fh = os.fdopen(open_regular(path), "rb")
    except OSError:
        return b"", offset
    with fh:
        if offset >= os.fstat(fh.fileno()).st_size:  # as read_jsonl: never a seek past a C long
            return b"", offset
        fh.seek(max(0, offset))
        data = fh.read(limit)
    return data, offset + len(data)


def tail_lines(path: Path, lines: int = 40, max_bytes: int = 64 << 10) -> str:
    """The last lines of a log, for an error report."""
    try:
        fh = os.fdopen(open_regular(path), "rb")
    except OSError:
        return ""
    with fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - max_bytes))
        text = fh.read(max_bytes).decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def rank_log(root: Path, rank: int) -> Path:
    """The log of one rank of a job that runs several processes (``resources.workers``, ``--workers``)."""
    return Path(root) / LOGS_DIR / RANK_LOG.format(rank=rank)


def step_name(step: int) -> str:
    """The folder name of the checkpoint at ``step`` (also what ``resume_from`` and ``--checkpoint`` take)."""
    return f"{STEP_PREFIX}{step}"


def step_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (``step-N`` with its trainer state), oldest first."""
    found = []
    folder = Path(root) / CHECKPOINTS_DIR
    for p in folder.iterdir() if folder.is_dir() else []:
        m = STEP_RE.match(p.name)
        if m and (p / TRAINER_STATE).exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def checkpoints_with_metrics(root: Path) -> list[dict]:
    """Each checkpoint with the train loss logged at or before its step and the eval loss at its step."""
    metrics = read_all_jsonl(Path(root) / METRICS_FILE)
    out = []
    for step, path in step_checkpoints(root):
        train = [m for m in metrics if m.get("loss") is not None and m.get("step", 0) <= step]
        evals = [m for m in metrics if m.get("eval_loss") is not None and m.get("step", 0) <= step]
        accuracy = [m for m in train if m.get("mean_token_accuracy") is not None]
        out.append(
            {
                "name": path.name,
                "step": step,
                "train_loss": train[-1]["loss"] if train else None,
                "eval_loss": evals[-1]["eval_loss"] if evals and evals[-1].get("step") == step else None,
                "mean_token_accuracy": accuracy[-1]["mean_token_accuracy"] if accuracy else None,
                "created": path.stat().st_mtime,
            }
        )
    return out


class JsonlTail:
    """Follows one growing JSON-lines file: each ``poll`` returns only the records completed since the last.

    It keeps the byte offset and the partial last line, so a supervisor that polls every half second reads
    each byte once, not the whole file each time. A file replaced (another inode) or truncated (shorter than
    the offset) is read again from its start, and ``poll`` says so: what the caller built from the old
    file is stale. Lines over ``MAX_LINE`` and lines that hold no JSON object are skipped, as
    ``read_jsonl`` skips them. ``read_jsonl`` serves pages from a given offset; this follows a file.
    """

    CHUNK = 1 << 20

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""  # the last line, still without its newline
        self.skipping = False  # inside a line longer than MAX_LINE: dropped up to its newline
        self.identity: tuple[int, int] | None = None

    def poll(self, max_bytes: int | None = None) -> tuple[list[dict], bool]:
        """(records completed since the last poll, whether the file started over); at most ``max_bytes``
        are read (None: up to the end), so one huge file cannot hold up its caller: the rest comes next."""
        try:
            fh = os.fdopen(open_regular(self.path), "rb")
        except OSError:
            return [], False  # not there (yet), or not a regular file: nothing to read
        restarted = False
        records: list[dict] = []
        with fh:
            st = os.fstat(fh.fileno())
            identity = (st.st_dev, st.st_ino)
            if self.identity is not None and (identity != self.identity or st.st_size < self.offset):
                self.offset, self.partial, self.skipping, restarted = 0, b"", False, True
            self.identity = identity
            fh.seek(self.offset)
            budget = max_bytes
            while budget is None or budget > 0:
                data = fh.read(self.CHUNK if budget is None else min(self.CHUNK, budget))
                if not data:
                    break
                self.offset += len(data)
                budget = None if budget is None else budget - len(data)
                self._split(data, records)
        return records, restarted

    def _split(self, data: bytes, records: list[dict]) -> None:
        if self.skipping:
            cut = data.find(b"\n")
            if cut < 0:
                return
            data, self.skipping = data[cut + 1 :], False
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            if len(line) < MAX_LINE and (record := json_record(line)) is not None:
                records.append(record)
        if len(self.partial) >= MAX_LINE:  # no record is this long: drop it up to its end
            self.partial, self.skipping = b"", True


class ProgressTail:
    """A running job's latest step and metrics, followed through its ``metrics.jsonl`` and ``events.jsonl``.

    The control plane shows these while a job runs; its supervisor polls each running job every tick, so
    each poll reads only what the worker appended since (see JsonlTail).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.metrics = JsonlTail(self.root / METRICS_FILE)
        self.events = JsonlTail(self.root / EVENTS_FILE)
        self.latest: dict = {}
        self.max_steps = None

    def poll(self, max_bytes: int | None = None) -> dict:
        records, restarted = self.metrics.poll(max_bytes)
        if restarted:
            self.latest = {}
        for m in records:
            self.latest.update({k: v for k, v in m.items() if v is not None})
        events, restarted = self.events.poll(max_bytes)
        if restarted:
            self.max_steps = None
        for e in events:
            if e.get("event") == TRAINING:
                self.max_steps = e.get("max_steps")
        return {
            "step": self.latest.get("step", 0),
            "max_steps": self.max_steps,
            "latest_metrics": dict(self.latest),
        }


def tracker_runs(root: Path) -> list[dict]:
    """The latest run of each experiment tracker the worker reported to: tool, run_id, url."""
    runs = {}
    for e in read_all_jsonl(Path(root) / EVENTS_FILE):
        if e.get("event") == TRACKER and isinstance(e.get("tool"), str):
            runs[e["tool"]] = {"tool": e["tool"], "run_id": e.get("run_id"), "url": e.get("url")}
    return list(runs.values())


def ending(root: Path) -> dict | None:
    """The worker's last ending event (finished / failed / cancelled) of its latest attempt, if any."""
    last = None
    for e in read_all_jsonl(Path(root) / EVENTS_FILE):
        if e.get("event") in ENDINGS:
            last = e
        elif e.get("event") in (STARTED, LAUNCHED):
            last = None  # an ending before a later start belongs to an earlier attempt
    return last


def safe_path(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it stays inside root (no ``..``, no absolute path, no symlink out); else None."""
    if not relative or "\x00" in relative:
        return None
    # a name past the system's limits (ENAMETOOLONG) or a symlink loop (RuntimeError before Python 3.13)
    # names no file here either
    try:
        root = Path(root).resolve()
        candidate = (root / relative).resolve()
        if candidate != root and root not in candidate.parents:
            return None
        return candidate if candidate.exists() else None
    except (OSError, RuntimeError):
        return None


def list_files(root: Path, limit: int = 10_000) -> list[dict]:
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out.append({"path": str(p.relative_to(root)), "bytes": p.stat().st_size})
            if len(out) >= limit:
                break
    return out


def has_started(root: Path) -> bool:
    """Whether a worker ever started here (the platform's own events, e.g. ``queued``, do not count)."""
    return any(e.get("event") == STARTED for e in read_all_jsonl(Path(root) / EVENTS_FILE))
