"""Settings from the environment: a bad value is one line naming the variable, never a traceback."""

from __future__ import annotations

import pytest

from tests.conftest import MEMO, write
from tests.support.clihelp import run_cli


@pytest.mark.parametrize("value", ["{bad", "{'gpu': {'gpus': 2}}", "[1", ""])
def test_queues_that_are_not_json_are_one_line_naming_the_variable(capsys, tmp_path, monkeypatch, value):
    monkeypatch.setenv("TUNEFORGE_QUEUES", value)
    code, _, err = run_cli(capsys, "datasets", "validate", write(tmp_path / "memo.json", MEMO))
    assert code == 2 and "Traceback" not in err, err
    assert " ".join(err.split()).startswith("error: bad setting TUNEFORGE_QUEUES: not valid JSON ("), err
