"""Every format and file type reads to the right records; every bad input says where."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.conftest import write
from tuneforge.data.load import load_records


def ok(path, **kw):
    loaded = load_records(path, **kw)
    assert loaded.errors == [], [str(e) for e in loaded.errors]
    return loaded


def test_alpaca_with_system_and_history(tmp_path):
    rec = {
        "instruction": "Q2",
        "input": "ctx",
        "output": "A2",
        "system": "be brief",
        "history": [["Q1", "A1"]],
    }
    loaded = ok(write(tmp_path / "a.json", [rec, {"instruction": "x", "output": "y"}]))
    assert loaded.format == "alpaca" and len(loaded.records) == 2
    assert loaded.records[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2\nctx"},
        {"role": "assistant", "content": "A2"},
    ]


def test_sharegpt_roles_and_system(tmp_path):
    rec = {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
        "system": "sys",
    }
    loaded = ok(write(tmp_path / "s.jsonl", json.dumps(rec) + "\n\n" + json.dumps(rec) + "\n"))
    assert loaded.format == "sharegpt" and len(loaded.records) == 2
    assert [m["role"] for m in loaded.records[0]["messages"]] == ["system", "user", "assistant"]


def test_openai_messages_ignore_extra_keys(tmp_path):
    rec = {
        "prompt": "ignored",
        "prompt_id": "x1",
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    }
    loaded = ok(write(tmp_path / "o.json", [rec] * 3))
    assert loaded.format == "openai" and len(loaded.records) == 3


def test_chatglm_conversations_role_content(tmp_path):
    rec = {
        "conversations": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "类型#裙"},
            {"role": "assistant", "content": "这条裙子"},
        ]
    }
    loaded = ok(write(tmp_path / "c.json", [rec]))
    assert loaded.format == "conversations" and loaded.records[0]["messages"][2]["content"] == "这条裙子"


def test_prompt_completion_text_and_preference(tmp_path):
    assert ok(write(tmp_path / "pc.json", [{"prompt": "p", "completion": "c"}])).format == "prompt_completion"
    text = ok(write(tmp_path / "t.jsonl", '{"text": "doc one"}\n{"text": "doc two"}\n'))
    assert text.kind == "text" and len(text.records) == 2
    pref = ok(write(tmp_path / "p.json", [{"prompt": "q", "chosen": "good", "rejected": "bad"}]))
    assert pref.kind == "preference"
    assert pref.records[0] == {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }


def test_preference_as_message_lists_splits_shared_prefix(tmp_path):
    u = {"role": "user", "content": "q"}
    rec = {
        "chosen": [u, {"role": "assistant", "content": "good"}],
        "rejected": [u, {"role": "assistant", "content": "bad"}],
    }
    r = ok(write(tmp_path / "p.json", [rec])).records[0]
    assert r["prompt"] == [u] and r["chosen"][0]["content"] == "good" and r["rejected"][0]["content"] == "bad"


def test_csv_with_quoted_multiline_fields_and_bom(tmp_path):
    raw = '\ufeffinstruction,input,output\n"line one\nline two",,"an, answer"\nq2,,a2\n'
    loaded = ok(write(tmp_path / "d.csv", raw))
    assert len(loaded.records) == 2
    assert loaded.records[0]["messages"][0]["content"] == "line one\nline two"
    assert loaded.records[0]["messages"][1]["content"] == "an, answer"


def test_parquet_folder_and_zip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "ds"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "output": "b"}] * 3), folder / "part1.parquet")
    write(folder / "sub" / "part2.jsonl", '{"instruction": "c", "output": "d"}\n')
    assert len(ok(folder).records) == 4
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(folder / "part1.parquet", "ds/part1.parquet")
        zf.writestr("ds/sub/part2.jsonl", '{"instruction": "c", "output": "d"}\n')
        zf.writestr("__MACOSX/._junk", "x")
    assert len(ok(write(tmp_path / "ds.zip", buf.getvalue())).records) == 4


@pytest.mark.parametrize(
    "write_options",
    [
        {"data_page_size": 512, "compression": "snappy"},  # many pages, dictionaries, statistics
        {"data_page_version": "2.0", "compression": "zstd", "write_page_index": True},
        {"use_dictionary": False, "compression": "none", "write_statistics": False},
    ],
)
def test_parquet_page_walk_reads_every_page_of_real_writers(tmp_path, write_options):
    """The page-header walk that bounds decompression (parquet_pages.py) lands exactly on each column
    chunk's end and finds the decoded sizes the footer declares (which adds the headers' own bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tuneforge.data.parquet_pages import ForwardReader, chunk_pages, read_footer

    rows = [{"instruction": f"q{i} " * (i % 7), "output": "answer " * (i % 50), "n": i} for i in range(3000)]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000, **write_options)
    meta = pq.ParquetFile(path).metadata
    with open(path, "rb") as fh:
        footer = read_footer(fh)  # our own read of the footer agrees with pyarrow's
        assert footer.leaves == meta.num_columns and len(footer.groups) == meta.num_row_groups
        reader = ForwardReader(fh)
        for g, ranges in enumerate(footer.groups):
            for c, (start, length) in enumerate(ranges):
                chunk = meta.row_group(g).column(c)
                assert length == chunk.total_compressed_size
                pages = chunk_pages(reader, start, length)  # raises unless the last page ends the chunk
                assert 0 < pages.total <= chunk.total_uncompressed_size
                assert pages.total >= chunk.total_uncompressed_size * 0.5, (pages, chunk)
                assert (pages.dictionary > 0) == chunk.has_dictionary_page
    assert len(ok(path).records) == 3000


def test_advertisegen_column_mapping(tmp_path):
    rows = [{"content": "类型#上衣*颜色#白色", "summary": "这款白色上衣简约大方。"}] * 2
    path = write(tmp_path / "adgen.json", rows)
    failed = load_records(path)
    assert "could not detect" in str(failed.errors[0]) and "--map" in str(failed.errors[0])
    loaded = ok(path, mapping="prompt=content,response=summary")
    assert loaded.records[0]["messages"] == [
        {"role": "user", "content": "类型#上衣*颜色#白色"},
        {"role": "assistant", "content": "这款白色上衣简约大方。"},
    ]


# -- bad input: every problem, with where and how


def test_invalid_json_reports_line(tmp_path):
    loaded = load_records(
        write(tmp_path / "bad.json", '[\n {"instruction": "a", "output": "b"},\n {oops}\n]')
    )
    assert (
        len(loaded.errors) == 1 and loaded.errors[0].line == 3 and "invalid JSON" in loaded.errors[0].message
    )


def test_jsonl_reports_every_bad_line(tmp_path):
    good = json.dumps({"instruction": "a", "output": "b"})
    loaded = load_records(write(tmp_path / "d.jsonl", f"{good}\n{{bad\n{good}\n[1]\n"))
    assert [e.line for e in loaded.errors] == [2, 4]
    assert len(loaded.records) == 2


def test_missing_and_wrong_type_fields_all_reported(tmp_path):
    rows = [
        {"instruction": "a", "output": "b"},
        {"instruction": "a"},
        {"instruction": "a", "output": "x"},
        {"instruction": ["not", "text"], "output": "c"},
    ]
    loaded = load_records(write(tmp_path / "a.json", rows), fmt="alpaca")
    assert [(e.record, e.field) for e in loaded.errors] == [(2, "output"), (4, "instruction")]
    assert "expected 'output' (string) in alpaca record" in loaded.errors[0].message
    assert "--map output=COLUMN" in loaded.errors[0].message


def test_unknown_role_and_no_assistant_turn(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a"}]},
    ]
    loaded = load_records(write(tmp_path / "m.json", rows))
    assert loaded.errors[0].record == 1 and loaded.errors[0].field == "messages[1].role"
    assert "unknown role 'robot'" in loaded.errors[0].message
    assert loaded.errors[1].record == 2 and "no assistant turn" in loaded.errors[1].message


def test_empty_file_empty_list_and_top_level_object(tmp_path):
    assert "empty file" in str(load_records(write(tmp_path / "e.json", "")).errors[0])
    assert "empty" in str(load_records(write(tmp_path / "l.json", "[]")).errors[0])
    obj = load_records(write(tmp_path / "o.json", {"data": [{"instruction": "a", "output": "b"}]}))
    assert "expected a list of records" in str(obj.errors[0]) and "'data'" in str(obj.errors[0])


def test_not_utf8_suggests_gbk(tmp_path):
    raw = json.dumps([{"instruction": "天气", "output": "好"}], ensure_ascii=False).encode("gbk")
    loaded = load_records(write(tmp_path / "gbk.json", raw))
    assert "not UTF-8" in str(loaded.errors[0]) and "GBK" in str(loaded.errors[0])


def test_zip_traversal_rejected_and_nothing_written(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.json", "[]")
        zf.writestr("/abs.json", "[]")
    loaded = load_records(write(tmp_path / "x" / "evil.zip", buf.getvalue()))
    assert len(loaded.errors) == 2 and all("outside the dataset folder" in str(e) for e in loaded.errors)
    assert not (tmp_path / "evil.json").exists()


def test_size_limit(tmp_path):
    path = write(tmp_path / "big.json", [{"instruction": "a" * 2000, "output": "b"}])
    loaded = load_records(path, max_bytes=1000)
    assert "over the limit" in str(loaded.errors[0])


def test_unknown_format_name_is_config_error(tmp_path):
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown format"):
        load_records(write(tmp_path / "a.json", [{"instruction": "a", "output": "b"}]), fmt="nope")
