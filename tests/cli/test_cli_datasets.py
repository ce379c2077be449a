"""`tuneforge datasets validate` as a user runs it: human output, --json, exit codes."""

from __future__ import annotations

import json

from tests.conftest import MEMO, write
from tests.support.clihelp import run_cli


def test_validate_json_valid_with_token_stats(capsys, tmp_path, tiny_llama):
    path = write(tmp_path / "memo.json", MEMO)
    code, out, err = run_cli(
        capsys, "datasets", "validate", path, "--json", "--model", tiny_llama, "--max-len", "20"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "alpaca" and report["records"] == 4 and report["errors"] == []
    stats = report["stats"]
    assert stats["unit"] == "tokens"
    assert set(stats["per_role"]) == {"user", "assistant"}
    assert stats["per_role"]["user"]["count"] == 4
    # The memo records render to 35, 22, 44 and 30 tokens with the tiny tokenizer.
    assert stats["sequence"] == {"count": 4, "min": 22, "median": 35, "p95": 44, "max": 44, "total": 131}
    assert stats["over_max_len"] == 4


def test_validate_broken_file_lists_every_problem(capsys, tmp_path):
    good = json.dumps({"instruction": "a", "output": "b"})
    path = write(tmp_path / "broken.jsonl", f"{good}\nnot json\n{json.dumps({'instruction': 'x'})}\n")
    code, out, _ = run_cli(capsys, "datasets", "validate", path, "--json")
    assert code == 2
    report = json.loads(out)
    assert [(e.get("line"), e.get("field")) for e in report["errors"]] == [(2, None), (3, "output")]
    code, out, _ = run_cli(capsys, "datasets", "validate", path)
    assert code == 2 and "line 2" in out and "line 3" in out and "invalid" in out


def test_validate_human_output_marks_trained_tokens(capsys, tmp_path, tiny_llama):
    path = write(tmp_path / "memo.json", MEMO)
    code, out, _ = run_cli(capsys, "datasets", "validate", path, "--model", tiny_llama, "--preview", "1")
    assert code == 0
    assert "⟦banana seven<|im_end|>⟧" in out and "valid" in out


def test_create_list_show_preview_rm(capsys, tmp_path):
    path = write(
        tmp_path / "adgen.jsonl",
        "".join(json.dumps({"content": f"c{i}", "summary": f"s{i}"}) + "\n" for i in range(3)),
    )
    code, out, _ = run_cli(
        capsys, "datasets", "create", path, "--map", "prompt=content,response=summary", "--json"
    )
    assert code == 0
    meta = json.loads(out)
    assert meta["records"] == 3 and meta["created_now"] is True
    code, out, _ = run_cli(
        capsys, "datasets", "create", path, "--map", "prompt=content,response=summary", "--json"
    )
    assert json.loads(out)["id"] == meta["id"] and json.loads(out)["created_now"] is False
    code, out, _ = run_cli(capsys, "datasets", "preview", meta["id"], "--json", "-n", "1")
    assert json.loads(out)[0]["messages"][1]["content"] == "s0"
    code, out, _ = run_cli(capsys, "datasets", "rm", "adgen")
    assert code == 0
    code, out, _ = run_cli(capsys, "datasets", "list", "--json")
    assert json.loads(out) == []


def test_unexpected_error_is_one_line_exit_1_and_traceback_only_with_debug(capsys, tmp_path, monkeypatch):
    import pytest

    import tuneforge.cli.datasets as cli_datasets

    def broken(*args, **kwargs):
        raise RuntimeError("boom [/] \n second line")

    monkeypatch.setattr(cli_datasets, "validate_path", broken)
    path = write(tmp_path / "memo.json", MEMO)
    code, out, err = run_cli(capsys, "datasets", "validate", path)
    assert code == 1 and out == ""
    assert err.strip() == (
        "internal error: RuntimeError: boom [/] second line (run with --debug for the traceback, "
        "and please report it)"
    )
    with pytest.raises(RuntimeError, match="boom"):
        run_cli(capsys, "--debug", "datasets", "validate", path)


def test_bad_setting_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_MAX_RECORDS", "many")
    path = write(tmp_path / "memo.json", MEMO)
    code, out, err = run_cli(capsys, "datasets", "validate", path)
    assert code == 2 and "Traceback" not in err
    assert " ".join(err.split()).startswith(
        "error: bad setting TUNEFORGE_MAX_RECORDS='many': input should be"
    )
    code, out, err = run_cli(capsys, "datasets", "validate", path, "--json")
    assert code == 2 and json.loads(out)["errors"][0]["message"].startswith(
        "bad setting TUNEFORGE_MAX_RECORDS"
    )


def test_usage_errors_are_click_messages_with_exit_2(capsys):
    """An unknown command, a missing argument, a bad option value: click's usage message and exit 2, never
    'internal error' (typer ≥ 0.2x raises its vendored copy of click's exceptions, not click's own)."""
    for argv, says in (
        (("nope",), "No such command 'nope'"),
        (("jobs", "events", "x"), "No such command 'events'"),
        (("datasets", "validate"), "Missing argument"),
        (("serve", "m", "--port", "abc"), "Invalid value for '--port'"),
    ):
        code, _out, err = run_cli(capsys, *argv)
        assert code == 2 and says in err and "internal error" not in err, (argv, err)


def test_validate_without_a_model_reads_the_file_once_and_says_characters(capsys, tmp_path, monkeypatch):
    """No --model and the default model not pulled: no tokenizer will come, so the duplicate signatures
    are made in the one read (not in a second one meant for tokenizing), and a valid dataset's note says
    the statistics are in characters; an invalid one's output has no note."""
    import tuneforge.data.validate as v

    reads = []
    real = v.scan_records
    monkeypatch.setattr(v, "scan_records", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    path = write(tmp_path / "memo.json", MEMO)
    code, out, err = run_cli(capsys, "datasets", "validate", path, "--json")
    assert code == 0, err
    assert json.loads(out)["stats"]["unit"] == "characters" and "duplicates" in json.loads(out)
    assert len(reads) == 1
    code, _, err = run_cli(capsys, "datasets", "validate", path)
    assert code == 0 and "Statistics are in characters" in " ".join(err.split())
    bad = write(tmp_path / "bad.json", [{"instruction": "a"}])
    code, _, err = run_cli(capsys, "datasets", "validate", bad)
    assert code == 2 and "characters" not in err
