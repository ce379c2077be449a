"""Metrics from the TensorBoard event files a user's script writes: scalars → ``metrics.jsonl`` rows.

Event files are TFRecord streams (8-byte length, its CRC, the record, its CRC); each record an ``Event``
protobuf from the ``tensorboard`` package (torch-free; the control plane runs this). The files are read
here rather than with tensorboard's loader, which opens a file by name again on every read: the job's
script owns its folder and could swap the file for a FIFO, and a blocked read would stop the supervisor.
Each file is opened once (a regular file, not a link, without blocking) and read from where the last
poll stopped, so each poll reads only what the script wrote since.
Tag names are mapped to the names spec jobs use, so the same charts work: ``loss`` and ``train/loss`` →
``loss``, ``eval/loss`` → ``eval_loss``, ``train/X`` → ``X``, ``eval/X`` → ``eval_X``, other ``a/b`` →
``a_b``. A row is ``{"step": N, <name>: value, …, "time": wall time}``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
from pathlib import Path

from . import folder as fmt

log = logging.getLogger(__name__)
EVENT_FILE_MARK = "tfevents"
MAX_EVENT_FILES = 200  # a script that writes more is not followed past this many files
MAX_ROWS_PER_POLL = 20_000


def metric_name(tag: str) -> str:
    tag = tag.strip("/")
    if tag in ("loss", "train/loss", "train_loss"):
        return "loss"
    if tag in ("eval/loss", "eval_loss", "val/loss", "validation/loss"):
        return "eval_loss"
    if tag.startswith("train/"):
        return tag[len("train/") :].replace("/", "_")
    if tag.startswith("eval/"):
        return "eval_" + tag[len("eval/") :].replace("/", "_")
    return tag.replace("/", "_")


def _scalar(value) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):  # TF2-style summaries store scalars as 0-d tensors
        from tensorboard.util import tensor_util

        try:
            array = tensor_util.make_ndarray(value.tensor)
        except Exception:  # a non-numeric tensor (text, image): not a metric
            return None
        if array.size == 1 and array.dtype.kind in "fiu":
            return float(array.reshape(()))
    return None


def _regular(path: Path) -> bool:
    """Not a FIFO (a read would block the supervisor), a link, or a file already gone."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def find_event_files(root: Path) -> list[Path]:
    """Event files anywhere in the job folder, not following links (mounted data is not searched)."""
    found: list[Path] = []
    for base, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for f in sorted(files):
            path = Path(base) / f
            if EVENT_FILE_MARK in f and f.startswith("events.out") and _regular(path):
                found.append(path)
                if len(found) >= MAX_EVENT_FILES:
                    return found
    return found


MAX_RECORD = 16 << 20  # an Event larger than this is not a scalar summary: the file is not followed
READ_PER_POLL = 8 << 20


class EventFile:
    """One event file, opened once, read forward in complete records."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = fmt.open_regular(path)
        self.offset = 0
        self.broken = False

    def events(self):
        from tensorboard.compat.proto import event_pb2

        data = os.pread(self.fd, READ_PER_POLL, self.offset)
        pos = 0
        while not self.broken and pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            if length > MAX_RECORD:
                self.broken = True
                log.warning("%s: a record of %d bytes; not followed further", self.path, length)
                return
            end = pos + 12 + length + 4
            if end > len(data):
                break  # the rest is still being written (or past this poll's read)
            try:
                yield event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            except Exception:  # a damaged record: skipped
                pass
            pos = end
            self.offset += 12 + length + 4

    def close(self) -> None:
        os.close(self.fd)


class TensorBoardTail:
    """Follows one job folder's event files and appends their scalars to its ``metrics.jsonl``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._loaders: dict[Path, EventFile] = {}
        # After a restart of the control plane the files are read again from their start: rows already
        # in metrics.jsonl (up to their wall time) are not written twice.
        self._written_until = max(
            (r.get("time", 0.0) for r in fmt.read_all_jsonl(self.root / fmt.METRICS_FILE)), default=0.0
        )

    def close(self) -> None:
        for loader in self._loaders.values():
            loader.close()
        self._loaders.clear()

    def poll(self) -> int:
        """Read what is new; returns the number of rows appended."""
        for path in find_event_files(self.root):
            if path not in self._loaders:
                try:
                    self._loaders[path] = EventFile(path)
                except OSError as exc:  # gone, or swapped for something that is not a file
                    log.warning("%s: not followed: %s", path, exc)
        rows: list[dict] = []
        for path, loader in self._loaders.items():
            current: dict | None = None
            try:
                for event in loader.events():
                    if not event.HasField("summary") or event.wall_time <= self._written_until:
                        continue
                    for value in event.summary.value:
                        number = _scalar(value)
                        if number is None:
                            continue
                        if current is None or current["step"] != event.step:
                            current = {"step": int(event.step)}
                            rows.append(current)
                        current[metric_name(value.tag)] = number
                        current["time"] = event.wall_time
                    if len(rows) >= MAX_ROWS_PER_POLL:
                        break
            except Exception as exc:  # a damaged file must not stop the others (or the supervisor)
                log.warning("%s: cannot read TensorBoard events: %s", path, exc)
        if rows:
            target = self.root / fmt.METRICS_FILE
            try:
                fd = fmt.open_regular(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            except OSError as exc:
                log.warning("%s: cannot append metrics: %s", target, exc)
                return 0
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                for row in sorted(rows, key=lambda r: (r["time"], r["step"])):
                    fh.write(json.dumps(row) + "\n")
        return len(rows)
