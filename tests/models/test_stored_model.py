""" "Is this a stored model?" has one answer: `models.store.stored_model_dir`."""

from __future__ import annotations

import re
from pathlib import Path

import tuneforge
from tests.support.platformhelp import fake_model


def test_stored_model_dir_finds_stored_models_only(tmp_path):
    from tuneforge.models.store import models_root, stored_model_dir

    folder = fake_model("tiny")
    assert stored_model_dir("tiny") == folder
    (models_root() / "half").mkdir()  # a folder without model.json: an unfinished pull
    (models_root() / "dir" / "model.json").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "model.json").write_text("{}")
    for name in ("nope", "half", "dir", "", "../outside", str(tmp_path / "outside"), "a/b", "tiny/"):
        assert stored_model_dir(name) is None, name


def test_no_module_outside_the_model_store_asks_on_its_own():
    """The five places that checked NAME_RE and model.json themselves call the lookup instead."""
    src = Path(tuneforge.__file__).parent
    own = re.compile(r'"model\.json"|models\.store import .*NAME_RE')
    found = [
        f"{path.relative_to(src)}:{n}"
        for path in sorted(src.rglob("*.py"))
        if path.parent.name != "models"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if own.search(line)
    ]
    assert found == []
