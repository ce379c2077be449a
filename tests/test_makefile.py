"""The README's two commands: what `make quickstart` and `make test` install (dry runs, nothing installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry_run(tmp_path: Path, *args: str) -> list[str]:
    # A copy without a .venv, so make plans the whole set-up.
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    out = subprocess.run(["make", "-n", *args], cwd=tmp_path, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def _pip_installs(lines: list[str]) -> list[str]:
    pip = [line for line in lines if " -m pip install " in line and "--upgrade pip" not in line]
    return [line.split(" install ", 1)[1] for line in pip]


def test_quickstart_installs_the_runtime_only(tmp_path):
    installs = _pip_installs(_dry_run(tmp_path, "quickstart"))
    assert installs == ['-q "torch==2.13.0"', "-q -e ."]


def test_test_installs_the_dev_extra(tmp_path):
    installs = _pip_installs(_dry_run(tmp_path, "test"))
    assert installs == ['-q "torch==2.13.0"', "-q -e .", '-q -e ".[dev]"']


def test_torch_index_picks_where_torch_comes_from(tmp_path):
    cpu = "https://download.pytorch.org/whl/cpu"
    installs = _pip_installs(_dry_run(tmp_path, "quickstart", f"TORCH_INDEX={cpu}"))
    assert installs[0] == f'-q --index-url {cpu} "torch==2.13.0"'
    assert installs[1] == "-q -e ."  # tuneforge's own dependencies still come from pip's indexes
