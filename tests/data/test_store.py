"""The dataset store: same content → same id; failures leave nothing behind."""

from __future__ import annotations

import pytest

from tests.conftest import MEMO, write
from tuneforge.data.load import load_records
from tuneforge.data.store import (
    find_dataset,
    list_datasets,
    read_stored_records,
    remove_dataset,
    store_dataset,
)
from tuneforge.errors import DataError
from tuneforge.settings import get_settings


def test_store_is_content_addressed(tmp_path):
    a = write(tmp_path / "a" / "memo.json", MEMO)
    b = write(tmp_path / "b" / "memo.json", MEMO)
    meta, new = store_dataset(load_records(a), "memo")
    again, new_again = store_dataset(load_records(b), "memo-copy")
    assert new and not new_again and again["id"] == meta["id"]
    folder = find_dataset("memo")
    assert read_stored_records(folder) == load_records(a).records
    assert (folder / "files" / "memo.json").read_bytes() == a.read_bytes()
    assert [m["id"] for m in list_datasets()] == [meta["id"]]
    remove_dataset(meta["id"])
    assert list_datasets() == []


def test_invalid_dataset_stores_nothing(tmp_path):
    bad = write(tmp_path / "bad.json", [{"instruction": "a"}])
    with pytest.raises(DataError, match="record 1 "):
        store_dataset(load_records(bad))
    root = get_settings().datasets_dir
    assert not root.exists() or list(root.iterdir()) == []
