"""Temporary folders in the stores (an upload being received, a dataset or model being written) that name
the process writing them: ``.upload-<pid>-<start ticks>-…`` and ``.tmp-<pid>-<start ticks>-…``.

A process killed while it wrote one (SIGKILL, OOM, power) leaves it behind; the control plane's start-up
reconciliation removes those whose process is gone, and never one a live process (this server, another
server on the same home, a ``tuneforge datasets create`` in a shell) is still writing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .executor import Handle, alive, process_start_ticks

log = logging.getLogger(__name__)

UPLOAD, TMP = ".upload-", ".tmp-"
_OWNED_RE = re.compile(r"^\.(?:upload|tmp)-(\d+)-(\d+)-")
# Folders named before they carried their owner: removed once nothing has touched them for this long
# (no writer of this project pauses that long between files).
LEGACY_STALE_S = 3600.0


def make_temp_dir(root: Path, prefix: str) -> Path:
    """A new temporary folder under ``root`` (``UPLOAD`` or ``TMP``) that names this process."""
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{pid}-{process_start_ticks(pid) or 0}-", dir=root))


@contextlib.contextmanager
def staged_folder(target: Path, replace: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``target`` (named for this process) that becomes ``target`` only when the
    block succeeds, and is removed when it fails: a reader never sees a half-written folder. An existing
    ``target`` is replaced when ``replace``; otherwise it must be an empty folder (its caller checked)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, TMP)
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target) if replace else target.rmdir()
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _in_use(folder: Path) -> bool:
    m = _OWNED_RE.match(folder.name)
    if m:
        pid, ticks = int(m.group(1)), int(m.group(2))
        if not Path("/proc/self/stat").exists():  # no way to tell here: keep it
            return True
        return alive(Handle(pid, ticks or None))
    try:
        return time.time() - folder.lstat().st_mtime < LEGACY_STALE_S
    except OSError:
        return False


def remove_stale(root: Path) -> list[str]:
    """Remove the temporary folders under ``root`` that no live process is writing; their names."""
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:  # no store yet
        return removed
    for entry in entries:
        if not entry.name.startswith((UPLOAD, TMP)) or entry.is_symlink() or not entry.is_dir():
            continue
        if _in_use(entry):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    if removed:
        log.info("%s: removed %d temporary folder(s) a stopped process left: %s", root, len(removed), removed)
    return removed
