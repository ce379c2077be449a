"""Importing models: what is recorded, and checked mistakes that write nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import write
from tests.support.clihelp import run_cli
from tuneforge.models.info import sha256_file
from tuneforge.settings import get_settings


def _store_is_empty() -> bool:
    root = get_settings().models_dir
    return not root.exists() or not any(root.iterdir())


def test_import_folder_records_what_a_model_is(capsys, tiny_llama):
    code, out, err = run_cli(capsys, "models", "import", tiny_llama, "--name", "tiny", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["context_length"] == 512 and info["chat_template"] is True
    assert info["eos_token"] == "<|im_end|>" and info["stop_tokens"] == ["<|im_end|>"]
    import transformers

    params = sum(
        p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llama)).parameters()
    )
    assert info["parameters"] == params
    assert info["files"]["model.safetensors"] == sha256_file(tiny_llama / "model.safetensors")
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert [m["name"] for m in json.loads(out)] == ["tiny"]
    code, out, _ = run_cli(capsys, "models", "show", "tiny")
    assert code == 0 and "LlamaForCausalLM" in out


@pytest.mark.parametrize("case", ["no-weights", "text-file", "corrupt-gguf", "missing"])
def test_checked_mistakes_exit_2_and_write_nothing(capsys, tmp_path, tiny_llama, case):
    if case == "no-weights":
        path = tmp_path / "noweights"
        shutil.copytree(tiny_llama, path)
        (path / "model.safetensors").unlink()
        expected = "no weight files"
    elif case == "text-file":
        path = write(tmp_path / "notes.txt", "hello")
        expected = "not a model"
    elif case == "corrupt-gguf":
        path = write(tmp_path / "broken.gguf", b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 7)
        expected = "corrupt or truncated GGUF"
    else:
        path = tmp_path / "nothing-here"
        expected = "no such file"
    code, out, err = run_cli(capsys, "models", "import", path)
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) <= 2
    assert _store_is_empty()


def test_not_gguf_magic(capsys, tmp_path):
    path = write(tmp_path / "fake.gguf", b"PK\x03\x04 not gguf")
    code, _, err = run_cli(capsys, "models", "import", path)
    assert code == 2 and "not a GGUF file" in err


def test_hub_id_without_a_hub_says_what_to_do(capsys):
    code, _, err = run_cli(capsys, "models", "import", "some-org/some-model")
    assert code == 1
    assert "could not fetch 'some-org/some-model'" in err and "tuneforge models import FOLDER" in err
    assert _store_is_empty()


def test_pull_unknown_name(capsys):
    code, _, err = run_cli(capsys, "models", "pull", "no-such-model")
    assert code == 2 and "smollm2-135m-instruct" in err
