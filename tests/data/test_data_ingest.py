"""Ingestion decisions and streaming: what the issue left to decide, each with its test, and the
streaming paths (validate_path, store_path) agreeing with the in-memory ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import MEMO, write
from tuneforge.data.load import load_records, scan_records
from tuneforge.data.store import read_stored_records, store_dataset, store_path
from tuneforge.data.validate import build_report, validate_path
from tuneforge.errors import DataError


def jsonl(path, *records):
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def messages(loaded):
    return [r["messages"] for r in loaded.records]


# Numbers where text is expected: accepted everywhere as their text, with one warning (they were
# silently stringified in alpaca/prompt-completion/text and refused in conversations).
def test_numbers_are_text_in_every_format_with_a_warning(tmp_path):
    alpaca = load_records(jsonl(tmp_path / "a.jsonl", {"instruction": "2+2?", "output": 4}))
    chat = load_records(
        jsonl(
            tmp_path / "c.jsonl",
            {"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": 4.5}]},
        )
    )
    text = load_records(jsonl(tmp_path / "t.jsonl", {"text": 12}))
    assert alpaca.errors == chat.errors == text.errors == []
    assert messages(alpaca)[0][-1] == {"role": "assistant", "content": "4"}
    assert [m["content"] for m in messages(chat)[0]] == ["7", "4.5"]
    assert text.records == [{"text": "12"}]
    for loaded, n, field in ((alpaca, 1, "output"), (chat, 2, "messages[0].content"), (text, 1, "text")):
        # located at the first number: record 1 (counted from 1, as lines are), its field
        warning = [w for w in loaded.warnings if "numbers" in w.message]
        assert len(warning) == 1 and warning[0].message.startswith(f"{n} value(s)"), warning
        assert (warning[0].record, warning[0].field) == (1, field), warning
        assert warning[0].code == "numbers_as_text" and warning[0].params == {"count": n}


def test_booleans_and_infinity_are_not_text(tmp_path):
    loaded = load_records(
        jsonl(tmp_path / "b.jsonl", {"instruction": True, "output": "x"}, {"instruction": "x", "output": "y"})
    )
    assert [(e.field, e.message) for e in loaded.errors] == [
        ("instruction", "expected a string; got boolean.")
    ]
    loaded = load_records(write(tmp_path / "i.json", '[{"instruction": "a", "output": Infinity}]'))
    assert [e.field for e in loaded.errors] == ["output"]


def test_null_history_turn_is_an_error_not_the_text_none(tmp_path):
    loaded = load_records(
        jsonl(tmp_path / "h.jsonl", {"instruction": "q", "output": "a", "history": [["hi", None]]})
    )
    assert [(e.field, e.record) for e in loaded.errors] == [("history[0][1]", 1)]
    assert loaded.records == []


def test_identical_chosen_and_rejected_warns(tmp_path):
    pairs = [
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q2", "chosen": "good", "rejected": "bad"},
        {"prompt": "q3", "chosen": "same", "rejected": "same"},
    ]
    loaded = load_records(jsonl(tmp_path / "p.jsonl", *pairs))
    assert loaded.errors == [] and len(loaded.records) == 3
    warning = [w.message for w in loaded.warnings if "same chosen and rejected" in w.message]
    assert warning == [
        "2 preference pair(s) have the same chosen and rejected answer (first: record 1); they teach nothing."
    ]


def test_openai_text_parts_and_developer_role(tmp_path):
    rec = {
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "you."}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
        ]
    }
    loaded = load_records(jsonl(tmp_path / "o.jsonl", rec))
    assert loaded.errors == [] and loaded.warnings == []
    assert messages(loaded)[0] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hello, you."},
        {"role": "assistant", "content": "Hi."},
    ]
    image = {"type": "image_url", "image_url": {"url": "http://x"}}
    bad = {"messages": [{"role": "user", "content": [image]}, {"role": "assistant", "content": "no"}]}
    loaded = load_records(jsonl(tmp_path / "img.jsonl", bad))
    assert [e.field for e in loaded.errors] == ["messages[0].content[0]"]
    assert "only text parts" in loaded.errors[0].message and "'image_url'" in loaded.errors[0].message


def test_tool_call_conversations_are_kept_without_alternation_warnings(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    rec = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "name": "weather", "content": "18C"},
            {"role": "assistant", "content": "18C and sunny."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You're welcome."},
        ],
        "tools": tools,
    }
    loaded = load_records(jsonl(tmp_path / "tools.jsonl", rec))
    assert loaded.errors == [] and loaded.warnings == [], [str(w) for w in loaded.warnings]
    record = loaded.records[0]
    assert record["tools"] == tools
    assert record["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert record["messages"][2] == {
        "role": "tool",
        "content": "18C",
        "tool_call_id": "c1",
        "name": "weather",
    }
    # Two user turns in a row are still reported.
    odd = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
        ]
    }
    loaded = load_records(jsonl(tmp_path / "odd.jsonl", odd))
    assert any("do not alternate" in w.message for w in loaded.warnings)


def test_malformed_tool_calls_are_located(tmp_path):
    rec = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [{"f": 1}]},
        ]
    }
    loaded = load_records(jsonl(tmp_path / "t.jsonl", rec))
    assert [e.field for e in loaded.errors] == ["messages[1].tool_calls[0]"]


def test_u2028_and_friends_stay_inside_a_jsonl_string(tmp_path):
    text = "one\u2028two\u0085three\x1cfour\u2029five"
    loaded = load_records(
        jsonl(tmp_path / "u.jsonl", {"instruction": "q", "output": text}, {"instruction": "r", "output": "s"})
    )
    assert loaded.errors == [] and messages(loaded)[0][-1]["content"] == text
    assert [r["messages"][0]["content"] for r in loaded.records] == ["q", "r"]


def test_csv_field_longer_than_the_csv_module_default(tmp_path):
    long = "z" * 300_000
    loaded = load_records(write(tmp_path / "f.csv", f'instruction,output\nhi,{long}\nq,"a\nb"\n'))
    assert loaded.errors == []
    assert [m[-1]["content"] for m in messages(loaded)] == [long, "a\nb"]


def test_json_array_streams_across_chunks_with_exact_records(tmp_path):
    # Records longer than a read chunk (1 MiB), numbers at chunk edges, nested values: all exact.
    records = [
        {"instruction": f"q{i}", "output": "x" * (i * 70_001 % 1_300_000), "n": i * 12345} for i in range(40)
    ]
    loaded = load_records(write(tmp_path / "big.json", records))
    assert loaded.errors == [] and len(loaded.records) == 40
    assert [len(m[-1]["content"]) for m in messages(loaded)] == [len(r["output"]) for r in records]


def test_invalid_json_deep_in_a_large_array_has_its_line(tmp_path):
    good = json.dumps({"instruction": "a", "output": "b" * 1000})
    text = "[\n" + ",\n".join([good] * 3000) + ",\n{oops}\n]"
    loaded = load_records(write(tmp_path / "bad.json", text))
    assert [(e.line, e.message) for e in loaded.errors] == [
        (3002, "invalid JSON: Expecting property name enclosed in double quotes (column 2).")
    ]


def test_validate_path_streams_to_the_same_report(tmp_path, tiny_tokenizer):
    from tuneforge.data.templates import CHAT_TEMPLATES

    path = write(tmp_path / "memo.json", MEMO)
    template = CHAT_TEMPLATES["chatml"]
    streamed = validate_path(path, tokenizer_loader=lambda: (tiny_tokenizer, template), preview=1)
    in_memory = build_report(load_records(path), tiny_tokenizer, template, preview=1)
    assert streamed.to_dict() == in_memory.to_dict()
    assert streamed.previews == in_memory.previews and streamed.to_dict()["stats"]["unit"] == "tokens"
    # The tokenizer is not even loaded for an invalid dataset.
    bad = write(tmp_path / "bad.json", [{"instruction": "a"}])
    calls = []
    report = validate_path(bad, tokenizer_loader=lambda: calls.append(1))
    assert calls == [] and not report.loaded.ok


def test_store_path_streams_the_same_dataset_and_leaves_nothing_when_invalid(tmp_path):
    path = write(tmp_path / "memo.json", MEMO * 3)
    meta, new = store_path(path, "memo")
    assert new and meta["records"] == 12
    from tuneforge.data.store import find_dataset

    assert read_stored_records(find_dataset("memo")) == load_records(path).records
    again, new_again = store_dataset(load_records(path), "memo")
    assert not new_again and again["id"] == meta["id"]
    bad = write(tmp_path / "bad.jsonl", '{"instruction": "a"}\n')
    with pytest.raises(DataError, match="output"):
        store_path(bad)
    root = meta and find_dataset("memo").parent
    assert sorted(p.name for p in root.iterdir()) == [meta["id"]]


def test_scan_keeps_no_records(tmp_path):
    path = write(tmp_path / "memo.json", MEMO)
    seen = []
    loaded = scan_records(path, on_record=seen.append)
    assert loaded.records == [] and loaded.n_records == 4 and seen == load_records(path).records


def test_parquet_is_read_without_arrow_worker_threads(tmp_path):
    """Arrow's pool threads, alive at interpreter exit, can abort the process (exit 134) after it printed
    its output. Reading must not start them: the thread count after reading equals the one after import."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "wide.parquet"
    pq.write_table(
        pa.table({f"c{i}": [f"v{j}" for j in range(5000)] for i in range(6)}), path, row_group_size=500
    )
    code = f"""
import os, pyarrow.parquet
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
from tuneforge.data.load import load_records
loaded = load_records({str(path)!r})
assert loaded.errors and "could not detect" in loaded.errors[-1].message, loaded.errors
print(before, threads())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert after == before


def test_a_record_the_chat_template_refuses_is_a_located_error(tmp_path, tiny_tokenizer):
    # Templates such as Llama 2's raise for a conversation that does not alternate; that is the data's
    # problem (exit 2 with its record), not an internal error.
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('system messages are not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    path = jsonl(
        tmp_path / "sys.jsonl",
        {"instruction": "a", "output": "b"},
        {"instruction": "c", "output": "d", "system": "be brief"},
    )
    report = validate_path(path, tokenizer_loader=lambda: (tiny_tokenizer, template))
    assert not report.loaded.ok
    assert [(e.line, e.record) for e in report.loaded.errors] == [(2, 2)]
    assert "system messages are not supported" in report.loaded.errors[0].message


def test_conversion_problems_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_MAX_PROBLEMS", "50")
    path = jsonl(tmp_path / "bad.jsonl", *[{"instruction": "a"} for _ in range(500)])
    loaded = load_records(path)
    assert len(loaded.errors) == 51 and "TUNEFORGE_MAX_PROBLEMS" in loaded.errors[-1].message


def test_csv_with_bare_carriage_returns(tmp_path):
    loaded = load_records(write(tmp_path / "mac.csv", b'instruction,output\rq1,a1\rq2,"a\rb"\r'))
    assert loaded.errors == []
    assert [m[-1]["content"] for m in messages(loaded)] == ["a1", "a\nb"]


def test_a_record_far_over_max_len_is_measured_turn_by_turn(tmp_path, tiny_tokenizer):
    from tuneforge.data.templates import CHAT_TEMPLATES
    from tuneforge.data.validate import LONG_RECORD_CHARS

    long = "The quick brown fox. " * (LONG_RECORD_CHARS // 20)
    path = jsonl(
        tmp_path / "long.jsonl", {"instruction": "a", "output": "b"}, {"instruction": "q", "output": long}
    )
    stats = validate_path(path, tokenizer_loader=lambda: (tiny_tokenizer, CHAT_TEMPLATES["chatml"])).stats
    assert stats["long_records_estimated"] == 1 and stats["over_max_len"] == 1
    exact = len(tiny_tokenizer(long, add_special_tokens=False)["input_ids"])
    assert abs(stats["per_role"]["assistant"]["max"] - exact) <= len(long) // (64 * 1024) + 1  # slice edges
    assert (
        stats["sequence"]["max"] == stats["per_role"]["assistant"]["max"] + stats["per_role"]["user"]["min"]
    )
