"""A user's own command as a job: its folder (code, mounts, output) and its clean environment.

The folder of a command job::

    jobs/<id>/
      command.json      the request (command, mounts, env, labels)
      work/             the working directory: the uploaded code, unpacked here (never run in place)
        <RELPATH>  ->   a stored dataset's files or a stored model, linked at the path asked for
                        (read-only while the job runs: its runner bind-mounts the stores read-only)
        <output>   ->   ../output
      output/           what the script may write (TUNEFORGE_OUTPUT_DIR)
      data/<name> ->    every mounted dataset by name (TUNEFORGE_DATA_DIR)
      worker.log, events.jsonl, metrics.jsonl (from the script's TensorBoard files),
      logs/rank-N.txt   each copy's output when it runs several (--workers N)
      exit_code.json    the last attempt's exit code, written by the runner

Standard library only: the control plane imports this.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

COMMAND_FILE = "command.json"
WORK_DIR = "work"
OUTPUT_DIR = "output"
DATA_DIR = "data"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# What the control plane may not be overridden on: the job's own places.
RESERVED_ENV = (
    "TUNEFORGE_OUTPUT_DIR",
    "TUNEFORGE_DATA_DIR",
    "TUNEFORGE_JOB_ID",
    "CUDA_VISIBLE_DEVICES",
    *("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),  # jobs/ranks.py
)


def relative_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a place inside the working directory (None when it can)."""
    if not isinstance(path, str) or not path.strip():
        return "empty path"
    if "\x00" in path or "\\" in path:
        return "use a plain relative path with '/' separators"
    p = PurePosixPath(path)
    if p.is_absolute():
        return "absolute paths are refused: give a path relative to the working directory"
    if ".." in p.parts:
        return "'..' is refused: the path must stay inside the working directory"
    if p.parts and ":" in p.parts[0]:
        return "a drive letter is refused"
    if not p.parts or p.parts == (".",):
        return "the working directory itself cannot be a mount"
    if len(path) > 500 or len(p.parts) > 32:
        return "path too long"
    return None


def collision(work: Path, path: str, dir_ok: bool = False) -> str | None:
    """Why ``path`` cannot be made inside ``work`` (the unpacked code); None when it can."""
    p = work
    parts = PurePosixPath(path).parts
    for i, part in enumerate(parts):
        p = p / part
        last = i == len(parts) - 1
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            return f"the code already has a file at {'/'.join(parts[: i + 1])!r}"
        if last and p.exists() and not dir_ok:
            return f"the code already has a folder at {path!r}: mount somewhere else"
    return None


def overlap(a: str, b: str) -> bool:
    pa, pb = PurePosixPath(a).parts, PurePosixPath(b).parts
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


@dataclass
class Mount:
    kind: str  # dataset | model
    name: str  # as the caller named it
    path: str  # relative to the working directory
    target: Path  # what it links to
    alias: str | None = None  # the name the caller used (a dataset's name rather than its id)


def _read_only(target: Path) -> None:
    """Clear the write bits of a mounted store's files (content-addressed: they are never rewritten).

    The fallback protection only: root ignores file modes and an owner can set them back. What enforces
    read-only is the runner's mount namespace (command_runner.py), where the stores are bind-mounted
    read-only; these bits are what is left where namespaces are not available.
    """
    for base, _dirs, files in os.walk(target):
        for f in files:
            p = Path(base) / f
            try:
                mode = p.lstat().st_mode
                if stat.S_ISREG(mode) and mode & 0o222:
                    p.chmod(mode & ~0o222)
            except OSError:
                pass


def prepare_folder(root: Path, mounts: list[Mount], output: str, request: dict) -> None:
    """Links, output and the request file inside a job folder whose ``work/`` already holds the code."""
    work = root / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    (root / OUTPUT_DIR).mkdir(exist_ok=True)
    data = root / DATA_DIR
    data.mkdir(exist_ok=True)
    for m in mounts:
        link = work.joinpath(*PurePosixPath(m.path).parts)
        link.parent.mkdir(parents=True, exist_ok=True)
        _read_only(m.target)
        link.symlink_to(m.target, target_is_directory=True)
        if m.kind == "dataset":
            by_name = data / re.sub(r"[^A-Za-z0-9._-]", "_", m.alias or m.name)
            if not by_name.exists():
                by_name.symlink_to(m.target, target_is_directory=True)
    out_link = work.joinpath(*PurePosixPath(output).parts)
    if out_link.is_dir() and not out_link.is_symlink():
        # The code ships its own (e.g. an `output/.gitkeep`): its files move to the job's output.
        for child in out_link.iterdir():
            shutil.move(str(child), str(root / OUTPUT_DIR / child.name))
        out_link.rmdir()
    if not out_link.exists():
        out_link.parent.mkdir(parents=True, exist_ok=True)
        # Relative: the folder is prepared in a scratch place and renamed into jobs/<id>.
        out_link.symlink_to(os.path.relpath(root / OUTPUT_DIR, out_link.parent), target_is_directory=True)
    (root / COMMAND_FILE).write_text(json.dumps(request, indent=2, ensure_ascii=False))


def clean_env(root: Path, job_id: str, extra: dict[str, str]) -> dict[str, str]:
    """PATH (the server's Python first, so `python` has torch and transformers), HOME, LANG, the job's
    places, then the caller's ``--env``; nothing else of the server's environment (tokens, database)."""
    path = os.pathsep.join(
        dict.fromkeys([str(Path(sys.executable).parent), *os.environ.get("PATH", "/usr/bin:/bin").split(":")])
    )
    env = {
        "PATH": path,
        "HOME": os.environ.get("HOME", str(root)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",  # the log streams while the script runs, not when its buffer fills
    }
    env.update(extra)
    env.update(
        {
            "TUNEFORGE_OUTPUT_DIR": str(root / OUTPUT_DIR),
            "TUNEFORGE_DATA_DIR": str(root / DATA_DIR),
            "TUNEFORGE_JOB_ID": job_id,
        }
    )
    return env
