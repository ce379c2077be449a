"""Every class of hostile dataset file the fuzzing run found, through the real CLI in a contained child
process: the right exit code and message, no traceback, seconds not minutes, bounded memory, nothing
written outside the case's folder."""

from __future__ import annotations

import pytest

from fuzzhelp import check_contained, snapshot
from hostile import CASES

MAX_SECONDS = 15  # on a loaded 2-core machine; most cases take well under a second


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file(case, cli_server, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case.build(folder)
    before = snapshot(folder)
    run = cli_server.run(argv, folder, case.env)
    check_contained(run, before, snapshot(folder), MAX_SECONDS)
    assert run.code == case.code, run.text[-3000:]
    assert case.expect in run.text, run.text[-3000:]
