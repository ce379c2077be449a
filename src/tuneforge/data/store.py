"""The dataset store: validated datasets copied under ``$TUNEFORGE_HOME/datasets/<id>/``.

A dataset folder holds the uploaded files as they came (``files/``), the canonical records
(``records.jsonl``) and ``dataset.json``. It is written in a temporary folder and renamed into
place, so a failure leaves nothing behind. Its id comes from the content, so the same files
uploaded twice are the same dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from tuneforge.errors import DataError, NotFoundError
from tuneforge.jobs.staging import TMP, make_temp_dir, staged_folder
from tuneforge.names import check_name, looks_like_id, name_from_file
from tuneforge.settings import env_name, get_settings

from .limits import FileProblem
from .load import LoadedDataset, scan_records
from .problem_codes import problem
from .sources import open_regular


def content_hash(path: Path, files: list[Path], fmt: str | None, mapping: dict | None) -> str:
    h = hashlib.sha256()
    base = path if path.is_dir() else path.parent
    for f in files:
        h.update(os.fsencode(f.relative_to(base)) + b"\0")
        with open_regular(f, str(f))[0] as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    h.update(json.dumps([fmt, mapping or {}], sort_keys=True).encode())
    return h.hexdigest()


def datasets_root() -> Path:
    return get_settings().datasets_dir


def _json_text(obj, **kwargs) -> str:
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a file name's undecodable byte): \u escapes keep it
        text = json.dumps(obj, **kwargs)
    return text


def _record_line(record: dict) -> str:
    return _json_text(record) + "\n"


def _copy_bounded(src: Path, dest: Path, budget: list[int]) -> None:
    """Copy a validated file, counting its bytes again: a file that grew since it was read is refused."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fin = open_regular(src, str(src))[0]
    except FileProblem as exc:
        raise DataError(str(exc.problem)) from None
    with fin, open(dest, "wb") as fout:
        while chunk := fin.read(1 << 20):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise DataError(
                    f"{src}: grew past the size limit ({env_name('max_dataset_mb')}) while stored."
                )
            fout.write(chunk)
    shutil.copystat(src, dest)


def _write_folder(tmp: Path, path: Path, files: list[Path], meta: dict) -> None:
    base = path if path.is_dir() else path.parent
    budget = [get_settings().max_dataset_mb * 2**20]
    for f in files:
        _copy_bounded(f, tmp / "files" / f.relative_to(base), budget)
    (tmp / "dataset.json").write_text(_json_text(meta, indent=2), encoding="utf-8")


def _dataset_name(name: str | None, path: Path) -> str:
    """The name typed, checked by the name rule; or, none typed, one made from the file's name."""
    return check_name(name, "dataset") if name is not None else name_from_file(path.stem)


def _meta(ds_id: str, digest: str, name, loaded: LoadedDataset, mapping, stats, duplicates=None) -> dict:
    return {
        "id": ds_id,
        "name": name,  # resolved by the caller (a typed name, or one made from the file name)
        "format": loaded.format,
        "kind": loaded.kind,
        "records": loaded.n_records,
        "sha256": digest,
        "mapping": mapping or {},
        "source": str(loaded.path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "warnings": [p.to_dict() for p in loaded.warnings],
        "stats": stats or {},
        **({"duplicates": duplicates} if duplicates is not None else {}),
    }


def store_path(
    path: str | Path,
    name: str | None = None,
    fmt: str | None = None,
    mapping: dict | None = None,
    stats: dict | None = None,
    max_bytes: int | None = None,
    source: str | None = None,
) -> tuple[dict, bool]:
    """Validate and store a dataset path in one streaming pass (bounded memory, whatever its size);
    returns (its metadata, whether it was new). Raises DataError with every problem when it is
    invalid, and leaves nothing behind then. Its duplicates (dedup.py) are in the metadata."""
    from .formats import parse_mapping

    path = Path(path)
    name = _dataset_name(name, path)
    mapping = parse_mapping(mapping)
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root, TMP)
    chars = None
    if stats is None:  # character statistics on the same pass (no tokenizer: callers may be torch-free)
        from .validate import StatsBuilder

        chars = StatsBuilder()
    from .dedup import DuplicateFinder, duplicate_warnings  # numpy, when a dataset is stored

    dupes = DuplicateFinder()
    try:
        with open(tmp / "records.jsonl", "w", encoding="utf-8") as fh:

            def keep(record: dict) -> None:
                fh.write(_record_line(record))
                dupes.add(record)
                if chars is not None:
                    chars.add(record)

            loaded = scan_records(path, fmt, mapping, keep, max_bytes)
        loaded.raise_for_errors()
        if not loaded.ok:
            empty = problem("empty_dataset")
            raise DataError(f"{path}: {empty.message}", [empty])
        if chars is not None:
            stats = chars.stats()
        digest = content_hash(path, loaded.files, loaded.format, mapping)
        ds_id = f"ds-{digest[:12]}"
        target = root / ds_id
        if (target / "dataset.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return json.loads((target / "dataset.json").read_text()), False
        duplicates = dupes.report()
        loaded.warnings += duplicate_warnings(duplicates)
        meta = _meta(ds_id, digest, name, loaded, mapping, stats, duplicates)
        meta["source"] = source or meta["source"]  # what the file was made from, when it is a copy
        _write_folder(tmp, path, loaded.files, meta)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta, True


def store_dataset(
    loaded: LoadedDataset, name: str | None = None, mapping: dict | None = None, stats: dict | None = None
) -> tuple[dict, bool]:
    """Store a loaded, valid dataset; returns (its metadata, whether it was new)."""
    loaded.raise_for_errors()
    name = _dataset_name(name, loaded.path)
    digest = content_hash(loaded.path, loaded.files, loaded.format, mapping)
    ds_id = f"ds-{digest[:12]}"
    root = datasets_root()
    target = root / ds_id
    if (target / "dataset.json").exists():
        return json.loads((target / "dataset.json").read_text()), False
    with staged_folder(target) as tmp:
        with open(tmp / "records.jsonl", "w", encoding="utf-8") as fh:
            for r in loaded.records:
                fh.write(_record_line(r))
        meta = _meta(ds_id, digest, name, loaded, mapping, stats)
        _write_folder(tmp, loaded.path, loaded.files, meta)
    return meta, True


def list_datasets() -> list[dict]:
    root = datasets_root()
    if not root.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(root.glob("ds-*/dataset.json"))]


def find_dataset(ref: str) -> Path:
    """A stored dataset's folder by id, or by name (the newest of that name). An id-shaped ``ref`` is
    looked up by id only, so no dataset's name stands in for another dataset's id."""
    if looks_like_id(ref):
        folder = datasets_root() / ref  # hex digits and one prefix: never a path out of the store
        if (folder / "dataset.json").is_file():
            return folder
    else:
        named = [meta for meta in list_datasets() if meta["name"] == ref]
        if named:
            return datasets_root() / max(named, key=lambda m: (m.get("created", ""), m["id"]))["id"]
    raise NotFoundError(f"no stored dataset {ref!r}; see `tuneforge datasets list`.")


def read_stored_records(folder: Path) -> list[dict]:
    with open(folder / "records.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def remove_dataset(ref: str) -> str:
    folder = find_dataset(ref)
    shutil.rmtree(folder)
    return folder.name


def read_any_dataset(ref: str, fmt: str | None = None, mapping=None) -> tuple[list[dict], str, str]:
    """(records, kind, format) of a dataset path, or of a stored dataset by id or name.

    A path's problems are all raised at once (DataError); a stored dataset was validated on the way in.
    """
    from tuneforge.errors import ConfigError

    from .load import load_records

    path = Path(ref).expanduser()
    if path.exists():
        loaded = load_records(path, fmt, mapping)
        loaded.raise_for_errors()
        return loaded.records, loaded.kind, loaded.format
    try:
        folder = find_dataset(ref)
    except NotFoundError:
        raise ConfigError(f"dataset {ref!r}: no such file, folder or stored dataset.") from None
    meta = json.loads((folder / "dataset.json").read_text())
    return read_stored_records(folder), meta["kind"], meta["format"]
