"""Run `tuneforge` on hostile input in a contained child process and check what every run must satisfy:
exit 0 or 2, no traceback, a bounded time, bounded memory, nothing written outside its folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
MAX_RSS_MB = 600  # the bound on peak memory for any input under the size limit
ADDRESS_SPACE = 3 * 2**30  # RLIMIT_AS: a runaway allocation fails in the child, not on the machine
TIMEOUT_S = 60  # the child is killed past this; the assertion on time is much tighter


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float
    maxrss_mb: float
    timed_out: bool

    @property
    def text(self) -> str:
        return self.out + self.err


class CliServer:
    def __init__(self):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "cliserver.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.capture = Path(tempfile.mkdtemp(prefix="tf-cliserver-"))

    def run(self, argv: list[str], cwd: Path, env: dict | None = None, timeout: float = TIMEOUT_S) -> Run:
        """Run `tuneforge ARGV` in ``cwd`` with HOME, TMPDIR and TUNEFORGE_HOME inside it."""
        home = cwd / ".home"
        tmp = cwd / ".tmp"
        home.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "env": {
                "HOME": str(home),
                "TMPDIR": str(tmp),
                "TUNEFORGE_HOME": str(home / "tuneforge"),
                **(env or {}),
            },
            "rlimit_as": ADDRESS_SPACE,
            "stdout": str(self.capture / "out"),
            "stderr": str(self.capture / "err"),
            "timeout": timeout,
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        read = lambda name: (self.capture / name).read_text(encoding="utf-8", errors="replace")  # noqa: E731
        return Run(
            answer["code"],
            read("out"),
            read("err"),
            answer["seconds"],
            answer["maxrss_mb"],
            answer["timed_out"],
        )

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        for f in self.capture.iterdir():
            f.unlink()
        self.capture.rmdir()


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def check_contained(run: Run, before: set[str], after: set[str], max_seconds: float) -> None:
    """What every run on any input must satisfy."""
    assert not run.timed_out, f"hung (killed after {run.seconds:.0f} s)"
    assert "Traceback" not in run.text, run.text[-3000:]
    assert run.code in (0, 2), f"exit {run.code}:\n{run.text[-3000:]}"
    assert run.seconds < max_seconds, f"took {run.seconds:.1f} s"
    assert run.maxrss_mb < MAX_RSS_MB, f"peak memory {run.maxrss_mb:.0f} MB"
    # Reading writes nothing; storing writes only finished datasets (no temporary folder left behind).
    new = {p for p in after - before if not p.startswith((".home", ".tmp"))}
    assert not new, f"wrote outside its dataset store: {sorted(new)[:5]}"
    stored = {p for p in after if "/datasets/" in p}
    assert not any("/datasets/.tmp-" in p for p in stored), sorted(stored)
    assert not any(p.startswith(".tmp/") for p in after), "left files in TMPDIR"
