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


@pytest.mark.parametrize("name", ["a" * 10_000, "", "job-0123456789ab"])
def test_a_queue_no_job_could_name_is_refused_at_start_up(monkeypatch, name):
    # A job names its queue by the names rule (resources.queue, --queue): a queue outside it would only
    # show up, 10 kB long, in every "no queue" error.
    import json

    from tuneforge.errors import ConfigError
    from tuneforge.settings import get_settings

    monkeypatch.setenv("TUNEFORGE_QUEUES", json.dumps({name: {"cpus": 1}, "gpu": {"gpus": 1}}))
    with pytest.raises(ConfigError, match="bad setting TUNEFORGE_QUEUES="):
        get_settings()
