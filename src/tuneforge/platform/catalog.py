"""Datasets and models as the API sees them: indexes of the stores on disk, which stay the truth.

``sync_*`` brings the tables in line with ``$TUNEFORGE_HOME/datasets`` and ``…/models`` (so what the CLI
stored without a server shows here, and what the API stores shows in ``tuneforge datasets list``).
Uploads are checked and stored in one streaming pass by the data package (``store_path``); an
invalid upload stores nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import stat
import threading
import time
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from tuneforge.data.formats import FORMATS, parse_mapping
from tuneforge.data.problem_codes import problem
from tuneforge.data.store import datasets_root, find_dataset, list_datasets, store_path
from tuneforge.errors import ConfigError, ConflictError, DataError, NotFoundError
from tuneforge.jobs.staging import UPLOAD, make_temp_dir, remove_stale
from tuneforge.models.store import list_models
from tuneforge.names import check_name, name_from_file

from .context import Platform
from .db import Dataset, Job, Model, Store, by_id_or_name

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")


def _row_from_meta(meta: dict) -> dict:
    return dict(
        id=meta["id"],
        name=meta["name"],
        state="ready",
        format=meta.get("format"),
        kind=meta.get("kind"),
        records=meta.get("records", 0),
        meta=meta,
        problems=[],
    )


def _once_more_on_conflict(sync):
    """Two requests may sync at once (PostgreSQL runs them in parallel): the loser's insert conflicts with
    the winner's row, and a second pass then finds everything in place."""

    def wrapper(store: Store) -> None:
        try:
            sync(store)
        except IntegrityError:
            sync(store)

    wrapper.__doc__ = sync.__doc__
    return wrapper


def _files_bytes(folder: Path) -> int:
    """The size of a dataset stored without the server (`tuneforge datasets create` with no server):
    the files it was made from, as an upload's size is (links are not followed)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def _in_step(rows: list[Dataset], on_disk: dict[str, dict]) -> bool:
    """Whether the index already holds exactly the store's datasets as ready rows (what the sync makes)."""
    ready = {r.id: r for r in rows if r.state == "ready"}
    return ready.keys() == on_disk.keys() and all(ready[i].meta == m for i, m in on_disk.items())


@_once_more_on_conflict
def sync_datasets(store: Store) -> None:
    on_disk = {m["id"]: m for m in list_datasets()}
    # Nearly every list finds the index in step: checked without the write lock a session takes on
    # SQLite, which queued every dataset list behind every writer (and the other lists behind it).
    with store.reading() as s:
        if _in_step(list(s.scalars(select(Dataset))), on_disk):
            return
    with store.session() as s:
        rows = {r.id: r for r in s.scalars(select(Dataset))}
        for ds_id, meta in on_disk.items():
            row = rows.get(ds_id)
            if row is None:
                size = _files_bytes(datasets_root() / ds_id / "files")
                s.add(Dataset(**_row_from_meta(meta), bytes=size, created_at=time.time()))
            elif row.state != "ready" or row.meta != meta:
                for k, v in _row_from_meta(meta).items():
                    setattr(row, k, v)
        for ds_id, row in rows.items():
            if row.state == "ready" and ds_id not in on_disk:  # removed with the CLI
                s.delete(row)


def dataset_dict(row: Dataset) -> dict:
    meta = row.meta or {}
    return {
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "format": row.format,
        "kind": row.kind,
        "records": row.records,
        "bytes": row.bytes,
        "created_at": row.created_at,
        "stats": meta.get("stats", {}),
        "warnings": meta.get("warnings", []),
        "duplicates": meta.get("duplicates"),  # exact and near duplicates (data/dedup.py)
        "mapping": meta.get("mapping", {}),
        "problems": row.problems or [],
        "token_stats": meta.get("token_stats"),
        "tokenizer": meta.get("tokenizer"),
    }


def get_dataset_row(store: Store, ref: str) -> Dataset:
    """A dataset's row by id, or by name (the newest of that name); an id-shaped ``ref`` by id only."""
    with store.reading() as s:
        row = by_id_or_name(s, Dataset, ref, newest=Dataset.created_at)
    if row is None:
        sync_datasets(store)
        with store.reading() as s:
            row = by_id_or_name(s, Dataset, ref, newest=Dataset.created_at)
    if row is None:
        raise NotFoundError(f"no dataset {ref!r}")
    return row


def dataset_folder(row: Dataset) -> Path:
    if row.state != "ready":
        raise ConflictError(f"dataset {row.id} is {row.state}, not ready")
    return find_dataset(row.id)


def delete_dataset(store: Store, ref: str) -> str:
    row = get_dataset_row(store, ref)
    with store.session() as s:
        for job in s.scalars(select(Job).where(Job.state.in_(ACTIVE))):
            if row.id in json.dumps(job.spec) or row.name in _job_dataset_refs(job):
                raise ConflictError(f"dataset {row.id} is used by {job.state} job {job.id}; cancel it first")
        if row.state == "ready":
            shutil.rmtree(find_dataset(row.id), ignore_errors=True)
        s.execute(delete(Dataset).where(Dataset.id == row.id))
    return row.id


def _job_dataset_refs(job: Job) -> set[str]:
    data = (job.spec or {}).get("data", {})
    refs = [*(data.get("train") or [])]
    if data.get("validation"):
        refs.append(data["validation"])
    return {r["path"] if isinstance(r, dict) else str(r) for r in refs}


# -- uploads --------------------------------------------------------------------------------------


class Upload:
    """A temporary folder that received an upload; removed by ``close`` whatever happened."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.dir = make_temp_dir(root, UPLOAD)
        self.files: list[Path] = []
        self.bytes = 0

    def path(self) -> Path:
        """What the data package reads: the one file (a zip included) or the folder of several."""
        if len(self.files) == 1:
            return self.files[0]
        return self.dir

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def as_sent(self, exc: DataError) -> DataError:
        """``exc`` with the files named as the client sent them: the server's temporary folder (which says
        where $TUNEFORGE_HOME is, and means nothing to the client) cut out of every message."""

        def cut(text: str | None) -> str | None:
            if text is None:
                return None
            return text.replace(f"{self.dir}{os.sep}", "").replace(str(self.dir), "the upload")

        problems = [
            dataclasses.replace(
                p, message=cut(p.message), file=cut(p.file), params=_cut_params(p.params, cut)
            )
            for p in exc.problems
        ]
        return DataError(cut(str(exc)), problems)


def _cut_params(params: dict | None, cut) -> dict | None:
    """A problem's params with the temporary folder cut out, as from its message."""
    return {k: cut(v) if isinstance(v, str) else v for k, v in params.items()} if params else params


def safe_filename(name: object, index: int) -> str:
    name = name if isinstance(name, str) else ""  # a JSON body's name may be any JSON value
    base = Path(name.replace("\\", "/")).name  # never a path: only the last component
    base = "".join(c for c in base if c.isalnum() or c in "._-").lstrip(".")
    if len(base) > 120:  # cut the stem, never the suffix: the suffix says how the file is read
        stem, dot, suffix = base.rpartition(".")
        suffix = suffix[:9]
        base = f"{stem[: 110 - len(suffix)]}.{suffix}" if dot and stem else base
        base = base[:120].lstrip(".")  # a stem of dots must not make a hidden file
    return base or f"upload-{index}.jsonl"


def check_options(fmt: object, mapping: object, name: object = None) -> dict:
    """The upload's mapping, once its fields have the types they need and its name (if given) follows
    the name rule; a ConfigError (→ 422) saying which field is wrong otherwise."""
    if name is not None:
        check_name(name, "dataset")
    if fmt is not None and not isinstance(fmt, str):
        kind = type(fmt).__name__
        raise ConfigError(f"format: expected a string, one of {', '.join(FORMATS)}; got {kind}.")
    if mapping is not None and not (
        isinstance(mapping, str)
        or (isinstance(mapping, dict) and all(isinstance(v, str) for v in mapping.values()))
    ):
        raise ConfigError('map: expected "prompt=COL,response=COL" or an object of column names (strings).')
    if fmt and fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    try:
        return parse_mapping(mapping)
    except ConfigError:
        raise
    except Exception as exc:  # a malformed map string
        raise ConfigError(f"map: {exc}") from None


def validate_and_store(upload: Upload, name: str | None, fmt: str | None, mapping: dict, max_bytes: int):
    """(metadata, new) of the stored dataset, or DataError with every problem; stores nothing if invalid.

    One streaming pass (``store_path``): records go to disk as they are read, so memory stays bounded
    whatever the upload's size; statistics are in characters (the control plane loads no tokenizer)."""
    try:
        return store_path(
            upload.path(), name or name_from_file(upload.files[0].stem), fmt, mapping, max_bytes=max_bytes
        )
    except DataError as exc:
        raise upload.as_sent(exc) from None


def ingest(store: Store, upload: Upload, name, fmt, mapping, max_bytes: int) -> Dataset:
    """Validate in this thread and index the result (the upload folder is closed by the caller)."""
    meta, _ = validate_and_store(upload, name, fmt, mapping, max_bytes)
    with store.session() as s:
        row = s.get(Dataset, meta["id"])
        if row is None:
            row = Dataset(**_row_from_meta(meta), bytes=upload.bytes, created_at=time.time())
            s.add(row)
        else:
            for k, v in _row_from_meta(meta).items():
                setattr(row, k, v)
            row.bytes = upload.bytes
    return row


def token_report_in_background(ctx: Platform, ds_id: str) -> None:
    """Token statistics and the masked preview, from a worker process (tokenizers import transformers,
    which the control plane never does). Written into the row's metadata when done; a dataset is
    usable (ready) before that. Without a pulled default model the statistics stay in characters.
    Each worker holds a tokenizer (~260 MB): a few run at once (``ctx.token_report_slots``), others wait."""
    import json as _json
    import subprocess
    import sys

    store, home, slots = ctx.store, ctx.home, ctx.token_report_slots

    def work():
        folder = home / "datasets" / ds_id
        argv = [sys.executable, "-m", "tuneforge.cli.dataset_report", str(folder)]
        env = {**os.environ, "TUNEFORGE_HOME": str(home), "TRANSFORMERS_VERBOSITY": "error"}
        try:
            with slots:
                proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("dataset %s: token statistics failed: %s", ds_id, exc)
            return
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            log.info("dataset %s: no token statistics (%s)", ds_id, last)
            return
        result = _json.loads(proc.stdout.strip().splitlines()[-1])
        with store.session() as s:
            row = s.get(Dataset, ds_id)
            if row is not None:
                row.meta = {
                    **row.meta,
                    "token_stats": result["stats"],
                    "tokenizer": result["tokenizer"],
                    "masked_preview": result["masked_preview"],
                }

    threading.Thread(target=work, name=f"tokens-{ds_id}", daemon=True).start()


def ingest_in_background(
    store: Store, upload: Upload, name, fmt, mapping, max_bytes: int, on_ready=None
) -> Dataset:
    """A large upload: a ``validating`` row now, ``ready`` or ``invalid`` (with its problems) later."""
    import secrets

    pending_id = f"ds-pending-{secrets.token_hex(6)}"
    row = Dataset(
        id=pending_id,
        name=name or name_from_file(upload.files[0].stem),
        state="validating",
        records=0,
        bytes=upload.bytes,
        meta={},
        problems=[],
        created_at=time.time(),
    )
    with store.session() as s:
        s.add(row)

    def work():
        try:
            meta, _ = validate_and_store(upload, name, fmt, mapping, max_bytes)
        except DataError as exc:
            with store.session() as s:
                r = s.get(Dataset, pending_id)
                r.state, r.problems = "invalid", [p.to_dict() for p in exc.problems]
            return
        except Exception as exc:  # a bug or the disk: say so on the row rather than leave it validating
            log.exception("validating upload %s", pending_id)
            with store.session() as s:
                r = s.get(Dataset, pending_id)
                r.state, r.problems = "invalid", [{"message": f"{type(exc).__name__}: {exc}"}]
            return
        finally:
            upload.close()
        with store.session() as s:
            if s.get(Dataset, meta["id"]) is None:
                s.add(Dataset(**_row_from_meta(meta), bytes=row.bytes, created_at=row.created_at))
            # Whoever polls the pending id is pointed at the dataset's content id.
            r = s.get(Dataset, pending_id)
            r.state, r.records, r.meta = "moved", meta["records"], {"moved_to": meta["id"]}
        if on_ready is not None:
            on_ready(meta["id"])

    threading.Thread(target=work, name=f"validate-{pending_id}", daemon=True).start()
    return row


def fail_interrupted_validations(store: Store, settings) -> None:
    """A restart while an upload was validating: say so on its row, and remove the temporary folders a
    killed server or CLI left in the stores (an upload's 40 MiB, a half-written dataset's copy)."""
    for root in (settings.datasets_dir, settings.models_dir):
        remove_stale(root)
    with store.session() as s:
        for row in s.scalars(select(Dataset).where(Dataset.state == "validating")):
            row.state = "invalid"
            row.problems = [problem("upload_interrupted").to_dict()]


# -- models ---------------------------------------------------------------------------------------


@_once_more_on_conflict
def sync_models(store: Store) -> None:
    on_disk = {m["name"]: m for m in list_models()}
    with store.session() as s:
        rows = {r.name: r for r in s.scalars(select(Model))}
        for name, info in on_disk.items():
            row = rows.get(name)
            if row is None:
                s.add(Model(name=name, kind=info.get("kind"), info=info, synced_at=time.time()))
            elif row.info != info:
                row.info, row.kind, row.synced_at = info, info.get("kind"), time.time()
        for name, row in rows.items():
            if name not in on_disk:
                s.delete(row)
