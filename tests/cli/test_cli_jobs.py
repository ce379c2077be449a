"""``tuneforge jobs metrics`` against a job's hostile metrics.jsonl: its key names and values are printed
as themselves, and a file of thousands of keys neither floods the table nor the error."""

from __future__ import annotations

from typer.testing import CliRunner

from tuneforge.cli import jobs
from tuneforge.cli.main import app
from tuneforge.errors import ConfigError

ODD = "rewards/[/][bold]x/mean"
ROWS = [
    {"step": 1, "loss": 0.5, ODD: "[/]<script>", **{f"rewards/f{i}/mean": 1.0 for i in range(10_000)}},
    {"step": 2, "loss": None, ODD: 1e308},
]


class FakeClient:
    def get(self, path, params):
        return {"data": ROWS if params["offset"] == 0 else [], "next_offset": 1}


def test_metric_names_and_values_print_as_themselves_and_thousands_of_keys_stay_bounded(monkeypatch):
    monkeypatch.setattr(jobs, "Client", FakeClient)
    monkeypatch.setenv("COLUMNS", "400")
    shown = CliRunner().invoke(app, ["jobs", "metrics", "job-1", "--keys", f"step,{ODD}"])
    assert shown.exit_code == 0 and "[/]<script>" in shown.output and "1e+308" in shown.output, shown.output
    default = CliRunner().invoke(app, ["jobs", "metrics", "job-1"])  # "[/]" raised MarkupError
    assert default.exit_code == 0, default.output
    assert default.output.splitlines()[0].count("┳") == 1 + jobs.MAX_FUNCTIONS  # step, loss, 8 functions
    wrong = CliRunner().invoke(app, ["jobs", "metrics", "job-1", "--keys", "nope"])
    assert isinstance(wrong.exception, ConfigError) and len(str(wrong.exception)) < 2000  # not 10,000 names
