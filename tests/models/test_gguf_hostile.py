"""A hostile GGUF (metadata counts far past any model's) is refused before gguf's reader parses it: that
reader keeps ~1.5 KB of numpy views per array element, so an 8 MB file of a million empty strings took
1.6 GB and minutes. The bounds (models/gguf_reads.py) are lowered here so the file stays small."""

from __future__ import annotations

import struct

import pytest

from tests.conftest import write
from tests.support.clihelp import run_cli
from tuneforge.settings import get_settings


def _strings_gguf(count: int) -> bytes:
    """A version-3 GGUF: no tensors, one metadata field holding ``count`` empty strings."""
    key = b"tokenizer.ggml.tokens"
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    return head + struct.pack("<IIQ", 9, 8, count) + b"\0" * (8 * count)


@pytest.mark.parametrize("declared", ["present", "absent"])
def test_too_many_array_elements_are_refused_before_parsing(capsys, tmp_path, monkeypatch, declared):
    import gguf

    import tuneforge.models.gguf_reads as reads

    monkeypatch.setattr(reads, "MAX_ELEMENTS", 1000, raising=False)
    parsed = []
    real = gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda *a, **k: parsed.append(a) or real(*a, **k))
    data = _strings_gguf(5000)
    if declared == "absent":  # counts a file cannot hold: refused without walking them
        data = data[: -8 * 5000 + 16]
    path = write(tmp_path / "bomb.gguf", data)
    code, _, err = run_cli(capsys, "models", "import", path)
    assert code == 2
    assert "declares 5,000 array elements" in err and "at most 1,000" in err, err
    assert err.count("bomb.gguf") == 1, err  # named once: not wrapped again as "corrupt or truncated"
    assert parsed == []
    root = get_settings().models_dir
    assert not root.exists() or not any(root.iterdir())
