"""Every class of hostile dataset file the fuzzing run found, through the real CLI in a contained child
process: the right exit code and message, no traceback, seconds not minutes, bounded memory, nothing
written outside the case's folder."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import zipfile

import pytest

from tests.support.fuzzhelp import check_contained, snapshot
from tests.support.hostile import CASES


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file(case, cli_server, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case.build(folder)
    before = snapshot(folder)
    run = cli_server.run(argv, folder, case.env)
    check_contained(run, before, snapshot(folder), case.seconds)
    assert run.code == case.code, run.text[-3000:]
    assert case.expect in run.text, run.text[-3000:]


# ------------------------------------------------------------------------ in-process checks of the same


@pytest.fixture
def small_records(monkeypatch):
    """TUNEFORGE_MAX_RECORD_MB=1, so an over-long line costs a few MiB."""
    from tuneforge.settings import get_settings

    monkeypatch.setenv("TUNEFORGE_MAX_RECORD_MB", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("kind", ["long_line", "sparse_nul"])
def test_one_problem_for_a_file_that_is_one_long_line(kind, small_records, tmp_path):
    """A 50 MB line or a sparse NUL file got a second, wrong error: "empty file."."""
    from tuneforge.data.readers import read_rows

    path = tmp_path / "d.jsonl"
    if kind == "long_line":
        path.write_bytes(b'{"instruction": "' + b"a" * (3 * 2**20) + b'"}')
    else:
        with open(path, "wb") as fh:
            fh.truncate(64 * 2**20)
    errors = read_rows(path, 2**31).errors
    assert [e.message for e in errors] == [errors[0].message] and "TUNEFORGE_MAX_RECORD_MB" in str(errors[0])


def _zip_of(members: dict[str, bytes], method) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_code_zip_refuses_bzip2_and_lzma(method, tmp_path):
    """A code upload is unpacked by the same rules: no member is inflated without a bound."""
    from tuneforge.data.archives import unpack_zip
    from tuneforge.data.limits import FileProblem, Limits

    with pytest.raises(FileProblem, match="compression method") as err:
        unpack_zip(
            _zip_of({"run.py": b"print(1)\n"}, method), "code.zip", tmp_path / "out", Limits.from_settings()
        )
    assert err.value.problem.file == "code.zip:run.py"
    assert not (tmp_path / "out" / "run.py").exists()


def test_code_zip_counts_the_entries_it_holds(tmp_path):
    from tuneforge.data.archives import unpack_zip
    from tuneforge.data.limits import FileProblem, Limits

    buf = _zip_of({f"f{i}.py": b"" for i in range(50)}, zipfile.ZIP_STORED)
    raw = bytearray(buf.getvalue())
    struct.pack_into("<HH", raw, raw.rfind(b"PK\x05\x06") + 8, 5, 5)
    limits = dataclasses.replace(Limits.from_settings(), max_files=10)
    with pytest.raises(FileProblem, match="holds 50 entries"):
        unpack_zip(io.BytesIO(bytes(raw)), "code.zip", tmp_path / "out", limits)


def test_one_rule_for_non_text_values_in_text_fields(tmp_path):
    """JSON, CSV and Parquet alike: strings are text, numbers are taken as text with a warning,
    anything else (a boolean, a Parquet timestamp) is an error naming the field and the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tuneforge.data.validate import validate_path

    (tmp_path / "n.jsonl").write_text('{"instruction": 42, "output": "b"}\n')
    (tmp_path / "b.jsonl").write_text('{"instruction": true, "output": "b"}\n')
    (tmp_path / "n.csv").write_text("instruction,output\n42,b\n")
    pq.write_table(pa.table({"instruction": pa.array([42]), "output": ["b"]}), tmp_path / "n.parquet")
    created = pa.array([0], type=pa.timestamp("ms"))
    pq.write_table(pa.table({"created": created, "out": ["b"]}), tmp_path / "t.parquet")
    for name in ("n.jsonl", "n.parquet"):
        report = validate_path(tmp_path / name).to_dict()
        assert report["valid"] and "numbers and are used as text" in report["warnings"][0]["message"]
    assert validate_path(tmp_path / "n.csv").to_dict()["valid"]
    boolean = validate_path(tmp_path / "b.jsonl").to_dict()
    assert boolean["errors"][0]["field"] == "instruction" and "got boolean" in boolean["errors"][0]["message"]
    stamp = validate_path(tmp_path / "t.parquet", mapping="prompt=created,response=out").to_dict()
    assert not stamp["valid"]
    assert stamp["errors"][0]["field"] == "prompt"
    assert "timestamp[ms] from Parquet column 'created'" in stamp["errors"][0]["message"]


OPENAI_DPO = {
    "input": {"messages": [{"role": "user", "content": "Hi"}]},
    "preferred_output": [{"role": "assistant", "content": "Hello!"}],
    "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
}


def test_openai_preference_lines_are_a_format(tmp_path):
    from tuneforge.data.load import load_records

    (tmp_path / "p.jsonl").write_text(
        json.dumps(OPENAI_DPO) + "\n" + json.dumps({**OPENAI_DPO, "input": "Hi"}) + "\n"
    )
    loaded = load_records(tmp_path / "p.jsonl")
    assert loaded.format == "openai_preference" and loaded.kind == "preference"
    assert [(e.line, e.field) for e in loaded.errors] == [(2, "input")]
    assert "OpenAI's preference format" in loaded.errors[0].message


# ------------------------------------------------------------- the same files through the server's uploads

GBK_LINE = json.dumps({"instruction": "今天", "output": "好"}, ensure_ascii=False).encode("gbk") + b"\n"
DIGITS = b'{"instruction": "a", "output": "b", "n": ' + b"7" * 5000 + b"}\n"


@pytest.fixture
def server():
    from tests.support.platformhelp import make_client

    with make_client() as client:
        yield client


@pytest.mark.parametrize(
    "content, expect",
    [
        (GBK_LINE, "iconv -f GBK -t UTF-8"),
        (json.dumps({**OPENAI_DPO, "input": "Hi"}).encode() + b"\n", "OpenAI's preference format"),
        (DIGITS, "TUNEFORGE_MAX_NUMBER_DIGITS"),
    ],
    ids=["gbk", "dpo_input_string", "digits_5000"],
)
def test_uploads_answer_data_errors_not_500(server, content, expect):
    """The same bytes through /v1/files (OpenAI's client) and /api/v1/datasets: a 4xx naming the
    problem (the first answered 500 to GBK and to a DPO line whose input is a string)."""
    files = server.post("/v1/files", files={"file": ("train.jsonl", content)}, data={"purpose": "fine-tune"})
    datasets = server.post("/api/v1/datasets", files=[("files", ("train.jsonl", content))])
    for answer in (files, datasets):
        assert 400 <= answer.status_code < 500, answer.text
        assert expect in answer.text, answer.text
        assert "Traceback" not in answer.text and "set_int_max_str_digits" not in answer.text


def test_json_body_number_over_the_digit_limit(server):
    """A JSON body's 5,000-digit integer answered Python's own message ("Exceeds the limit (4300
    digits)… sys.set_int_max_str_digits()"): the data package's limit and its setting now."""
    body = b'{"records": [{"instruction": "a", "output": "b", "n": ' + b"7" * 5000 + b"}]}"
    answer = server.post("/api/v1/datasets", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert "TUNEFORGE_MAX_NUMBER_DIGITS" in answer.text and "set_int_max_str_digits" not in answer.text


def test_openai_preference_file_is_accepted(server):
    answer = server.post(
        "/v1/files",
        files={"file": ("dpo.jsonl", (json.dumps(OPENAI_DPO) + "\n").encode())},
        data={"purpose": "fine-tune"},
    )
    assert answer.status_code == 200, answer.text
