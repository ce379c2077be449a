"""The README's two commands: what `make quickstart` and `make test` install and run (dry runs)."""

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
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def _installs(lines: list[str]) -> list[str]:
    """Each install step as 'pip ARGS' (torch: pip honours the machine's pip configuration) or 'uv ARGS'."""
    steps = []
    for line in lines:
        if " -m pip install " in line and "--upgrade" not in line:
            steps.append("pip " + line.split(" install ", 1)[1])
        elif "/uv pip install " in line:
            steps.append("uv " + line.split(" install ", 1)[1].replace("--python .venv/bin/python ", ""))
    return steps


def test_quickstart_installs_the_runtime_only(tmp_path):
    installs = _installs(_dry_run(tmp_path, "quickstart"))
    assert installs == ['pip -q "torch==2.13.0"', "uv -q -e ."]


def test_test_installs_the_dev_extra_with_the_engines_the_tests_start(tmp_path):
    installs = _installs(_dry_run(tmp_path, "test"))
    assert installs == ['pip -q "torch==2.13.0"', "uv -q -e .", 'uv -q -e ".[dev,docs,ray,wandb,swanlab]"']


def test_test_builds_the_docs_strictly_after_lint_and_before_pytest(tmp_path):
    # A broken link in docs/ must fail `make test` before the suite's minutes are spent.
    lines = _dry_run(tmp_path, "test")
    steps = ("/ruff check ", "/ruff format --check ", "/mkdocs build --strict -d site/")
    where = {step: [i for i, line in enumerate(lines) if step in line] for step in steps}
    assert all(len(found) == 1 for found in where.values()), where
    assert [where[step][0] for step in steps] == sorted(where[step][0] for step in steps)
    pytests = [i for i, line in enumerate(lines) if "/pytest " in line]
    assert pytests and min(pytests) > where["/mkdocs build --strict -d site/"][0], (pytests, where)


def test_test_runs_the_ray_file_beside_the_two_workers_and_every_other_file_in_them(tmp_path):
    # The Ray file's minutes are mostly Ray's waits: in a lane of its own, not holding one of the two workers.
    lines = [line for line in _dry_run(tmp_path, "test") if "/pytest " in line]
    ray = "tests/platform/test_ray_executor.py"
    lane = [line for line in lines if "-n 2" not in line]
    suite = [line for line in lines if "-n 2 --dist loadfile" in line]
    assert len(lane) == 1 and len(suite) == 1, lines
    assert f" {ray} " in lane[0] and lane[0].rstrip(" \\").endswith("& ray=$!;"), lane
    assert f"--ignore={ray}" in suite[0], suite


def test_docs_builds_the_site_with_the_docs_extra(tmp_path):
    lines = _dry_run(tmp_path, "docs")
    assert _installs(lines)[-1] == 'uv -q -e ".[dev,docs,ray,wandb,swanlab]"'
    assert lines[-1] == "NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d site/"


def test_torch_index_picks_where_torch_comes_from(tmp_path):
    cpu = "https://download.pytorch.org/whl/cpu"
    installs = _installs(_dry_run(tmp_path, "quickstart", f"TORCH_INDEX={cpu}"))
    assert installs[0] == f'pip -q --index-url {cpu} "torch==2.13.0"'
    assert installs[1] == "uv -q -e ."  # tuneforge's own dependencies still come from PyPI


def test_a_hung_ray_lane_fails_make_test_with_its_log(tmp_path):
    # The real recipe with a stand-in pytest: the Ray file's run hangs, the suite passes at once.
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    pytest_bin = tmp_path / "venv" / "bin" / "pytest"
    pytest_bin.parent.mkdir(parents=True)
    pytest_bin.write_text('#!/bin/sh\ncase "$*" in *no:xdist*) echo ray-lane-started; exec sleep 60;; esac\n')
    pytest_bin.chmod(0o755)
    out = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            "lint",
            "-o",
            "docs",
            "test",
            "VENV=venv",
            "RAY_LANE_TIMEOUT=1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0, out.stdout
    assert "(exit 124)" in out.stdout and "ray-lane-started" in out.stdout, out.stdout
