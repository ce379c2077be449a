"""The tokenizer read from its files without transformers gives AutoTokenizer's ids, offsets, text and
rendered templates; files it does not understand go the transformers way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import build_tokenizer
from tests.support.paths import ROOT
from tuneforge.data.templates import CHAT_TEMPLATES, LLAMAFACTORY_TEMPLATES, resolve_chat_template
from tuneforge.models.file_tokenizer import FileTokenizer, load_counting_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing ones   \n\nand blank lines\t tabs",
    "把这句话翻译成英文。今天天气很好。",
    "<|im_start|>user\nspecial tokens inside text<|im_end|>\n",
    "emoji 🦊 and accents: café, naïve, Ærø",
    "",
]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?  "},
    {"role": "assistant", "content": " Rome."},
]
# The pulled default model, where this machine has it (tests get an empty TUNEFORGE_HOME of their own).
DEFAULT_MODEL = Path.home() / ".tuneforge" / "models" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(folder)
    return folder


def _folders(tiny_folder: Path) -> list[Path]:
    return [tiny_folder, *([DEFAULT_MODEL] if (DEFAULT_MODEL / "tokenizer.json").exists() else [])]


def _same(folder: Path) -> None:
    from transformers import AutoTokenizer

    mine, theirs = load_counting_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    if theirs.pad_token is None:
        theirs.pad_token = theirs.eos_token
    assert isinstance(mine, FileTokenizer)
    assert mine.special_tokens_map == theirs.special_tokens_map
    assert (mine.eos_token_id, mine.bos_token_id) == (theirs.eos_token_id, theirs.bos_token_id)
    assert mine.chat_template == theirs.chat_template
    for text in TEXTS:
        a = mine(text, add_special_tokens=False, return_offsets_mapping=True)
        b = theirs(text, add_special_tokens=False, return_offsets_mapping=True)
        assert (a["input_ids"], a["offset_mapping"]) == (list(b["input_ids"]), list(b["offset_mapping"]))
        assert mine.decode(a["input_ids"]) == theirs.decode(b["input_ids"])
    a = mine(TEXTS, add_special_tokens=False, return_offsets_mapping=True)
    b = theirs(TEXTS, add_special_tokens=False, return_offsets_mapping=True)
    assert a["input_ids"] == [list(x) for x in b["input_ids"]]
    assert a["offset_mapping"] == [list(x) for x in b["offset_mapping"]]
    templates = [*CHAT_TEMPLATES.values(), *LLAMAFACTORY_TEMPLATES.values()]
    templates.append(resolve_chat_template(theirs, None))  # the model's own
    for template in templates:
        for upto, prompt in ((len(MESSAGES), False), (3, False), (2, True)):
            kwargs = dict(chat_template=template, tokenize=False, add_generation_prompt=prompt)
            assert mine.apply_chat_template(MESSAGES[:upto], **kwargs) == theirs.apply_chat_template(
                MESSAGES[:upto], **kwargs
            )


def test_file_tokenizer_matches_autotokenizer(tiny_folder):
    for folder in _folders(tiny_folder):
        _same(folder)


def test_files_it_does_not_understand_go_to_transformers(tiny_folder, tmp_path):
    from transformers import PreTrainedTokenizerBase

    changes = ({"add_prefix_space": True}, {"tokenizer_class": "LlamaTokenizer"}, {"eos_token": "<nope>"})
    for change in changes:
        folder = tmp_path / "x"
        subprocess.run(["cp", "-r", str(tiny_folder), str(folder)], check=True)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, **change}))
        try:
            tok = load_counting_tokenizer(folder)
        except Exception:  # noqa: BLE001 (transformers refusing a broken file is fine too: not ours)
            tok = None
        assert not isinstance(tok, FileTokenizer), change
        assert tok is None or isinstance(tok, PreTrainedTokenizerBase)
        subprocess.run(["rm", "-r", str(folder)], check=True)


def test_validate_counts_tokens_without_torch(tiny_folder, tmp_path):
    """`datasets validate --model` loads its tokenizer without importing torch or transformers' model code."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "Say hi", "output": "Hi."}) + "\n")
    code = (
        "import sys; from tuneforge.cli.datasets import _validate; "
        f"r = _validate({str(data)!r}, None, None, {str(tiny_folder)!r}, None, 64, 1, True, None, None); "
        "assert r.stats['unit'] == 'tokens', r.stats; "
        "print(sorted(m for m in ('torch', 'transformers.models.auto') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
