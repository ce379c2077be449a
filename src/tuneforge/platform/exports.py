"""Model exports from the API: a GGUF file + Ollama Modelfile, or a merged safetensors folder.

An export loads weights with torch, so it runs as a ``tuneforge models export … --json`` worker started
through the executor (the launcher jobs use; it counts against the same capacity and GPU pool) and
reports like a pull: the worker appends ``{stage, done, total}`` lines to a progress file that a GET
reads (``pulls.last_progress``). Its output is written under ``$TUNEFORGE_HOME/exports/<id>/out/``,
which appears only when complete (the exporters stage it), so a failed export leaves no partial folder.
Each export's record is ``export.json`` beside it, so a restarted server still lists and serves the
finished ones; one that was running when the server stopped is failed (its worker's output is not
trusted) and its partial output removed.

Bounded: one export per model at a time (a second request answers the running one) and a few at once;
the newest KEEP_FINISHED finished exports are kept, the files of older ones deleted (GGUF files are as
large as the model), at start-up as well as when a new export starts.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field

from tuneforge.errors import ConfigError, ConflictError, NotFoundError, ResourceError
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.executor import Launch, worker_argv

from . import registry
from .context import Platform
from .pulls import last_progress
from .schemas import Body

log = logging.getLogger(__name__)

KEEP_FINISHED = 50
RECORD = "export.json"
_EXPORT_ID = re.compile(r"exp-[0-9a-f]{12}")
POLL_S = 0.5
TIMEOUT_S = 3600
FORMATS = {"gguf": "gguf", "merged": "safetensors"}  # the API's name → `models export --format`
RECORD_MAX = 64 << 10  # an export's record is a few hundred bytes; the worker's error is clipped below
_STATES = ("running", "succeeded", "failed")
_NUM, _OPT_STR, _OPT_NUM = (int, float), (str, type(None)), (int, float, type(None))
_RECORD_TYPES = {
    "model": str, "format": str, "quant": _OPT_STR, "register": bool, "base": _OPT_STR, "state": str,
    "stage": _OPT_STR, "done": _OPT_NUM, "total": _OPT_NUM, "error": _OPT_STR, "registered": _OPT_STR,
    "started_at": _NUM, "finished_at": _OPT_NUM,
}  # fmt: skip


class ExportRequest(Body):
    format: Literal["gguf", "merged"] = Field(
        description="gguf: one GGUF file + an Ollama Modelfile; merged: the adapter merged into its base "
        "as a safetensors folder."
    )
    quant: Literal["f16", "q8_0", "q4_0"] | None = Field(
        default=None, description="With gguf: f16 (default), q8_0 or q4_0."
    )
    version: int | None = Field(
        default=None,
        ge=1,
        le=registry.MAX_VERSION,
        description="The registered model's version (default: the latest).",
    )
    register_version: bool = Field(
        default=False,
        description="With merged: register the merged folder as the next version of this model.",
    )


@dataclass
class Export:
    id: str
    model: str  # name@version of a registered model, or a stored model's name
    format: str
    quant: str | None
    folder: Path
    register: bool
    base: str | None
    state: str = "running"
    stage: str | None = None
    done: float | None = None
    total: float | None = None
    error: str | None = None
    registered: str | None = None  # name@version made from a merged export
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def output(self) -> Path:
        """Named after the model (``ft@2`` → ``ft-v2``): the GGUF file and the Modelfile take its name."""
        return self.folder / re.sub(r"[^A-Za-z0-9._-]", "-", self.model.replace("@", "-v")).strip("-.")

    @property
    def progress_file(self) -> Path:
        return self.folder / "progress.jsonl"

    def save(self) -> None:
        """Its record beside its files, replaced whole (a crash leaves the old one or the new one)."""
        fields = ("id", "model", "format", "quant", "register", "base", "state", "stage", "done", "total",
                  "error", "registered", "started_at", "finished_at")  # fmt: skip
        fmt.write_json_atomic(self.folder / RECORD, {k: getattr(self, k) for k in fields})

    @classmethod
    def load(cls, folder: Path) -> Export | None:
        """The export a record describes; None for a folder without a readable one.

        The record is read like any file a worker's folder may hold: bounded, never through a symlink,
        each field of its own type (a wrong type would fail later, in start-up's sort or a GET), and its
        id is the folder's name (a record cannot make one export answer for another)."""
        data, _ = fmt.read_bytes(folder / RECORD, 0, RECORD_MAX)
        record = fmt.json_record(data)
        if record is None or any(not isinstance(record.get(k), t) for k, t in _RECORD_TYPES.items()):
            return None
        if record["format"] not in FORMATS or record["state"] not in _STATES:
            return None
        export = cls(id=folder.name, folder=folder, **{k: record[k] for k in _RECORD_TYPES})
        return export if export.output != folder else None  # a model named "" or "..": its output is here

    def as_dict(self) -> dict:
        if self.state == "running":
            line = last_progress(self.progress_file)
            if line:
                self.stage, self.done, self.total = line.get("stage"), line.get("done"), line.get("total")
        files = fmt.list_files(self.output) if self.state == "succeeded" else []
        return {
            "id": self.id,
            "model": self.model,
            "format": self.format,
            "quant": self.quant,
            "state": self.state,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "files": files,
            "registered": self.registered,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _source(ctx: Platform, name: str, version: int | None) -> tuple[str, Path, str | None, str]:
    """(ref, weights folder, base model, kind) of a registered version, else of a stored model."""
    from tuneforge.models.store import stored_model_dir

    try:
        row = registry.resolve(ctx, f"{name}@{version}" if version else name)
    except NotFoundError:
        row = None
    if row is not None:
        path = Path(row.path)
        kind = "adapter" if (path / "adapter_config.json").is_file() else "model"
        return f"{row.name}@{row.version}", path, row.base_model or None, kind
    stored = stored_model_dir(name)
    if version or stored is None:
        what = f"{name}@{version}" if version else name
        raise NotFoundError(
            f"no registered model or stored model {what!r} (see GET /api/v1/models and /models/registered)"
        )
    return name, stored, None, "model"


class Exports:
    """The exports of one control plane."""

    def __init__(self, ctx: Platform):
        self.ctx = ctx
        self.lock = threading.Lock()
        self.exports: dict[str, Export] = {}
        self.root = ctx.home / "exports"
        self._recover()

    def _recover(self) -> None:
        """The exports of earlier runs, from their records: finished ones are listed again; one that was
        running lost its follower and is failed; folders without a record (a crash before it was
        written) are removed; then the newest KEEP_FINISHED are kept."""
        for folder in sorted(self.root.glob("exp-*")) if self.root.is_dir() else []:
            if not _EXPORT_ID.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
                # not one of ours; a symlink would list, serve and delete files outside exports/
                log.warning("exports: %s is not an export folder; left alone", folder)
                continue
            export = Export.load(folder)
            if export is None:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if export.state == "running":
                self.ctx.executor.cancel(export.id, grace_s=5)  # an adopted worker, if it still runs
                export.state, export.finished_at = "failed", time.time()
                export.error = "the server stopped during the export; start it again"
                shutil.rmtree(export.output, ignore_errors=True)
                export.save()
            self.exports[export.id] = export
        with self.lock:
            self._forget_old()

    def start(self, name: str, body: ExportRequest) -> Export:
        ref, path, base, kind = _source(self.ctx, name, body.version)
        if body.format == "merged" and kind != "adapter":
            raise ConfigError(
                f"{ref} is already a standalone model (not a LoRA adapter): nothing to merge; "
                "export it as gguf instead"
            )
        if body.quant and body.format != "gguf":
            raise ConfigError("quant applies to format gguf only")
        if body.register_version and body.format != "merged":
            raise ConfigError("register applies to format merged (a GGUF file is not served from the store)")
        limit = self.ctx.max_exports
        with self.lock:
            running = [e for e in self.exports.values() if e.state == "running"]
            for other in running:
                if other.model == ref:
                    raise ConflictError(
                        f"{ref} is being exported ({other.id}); wait for it: GET "
                        f"/api/v1/models/{name}/exports/{other.id}"
                    )
            if len(running) >= limit:
                raise ResourceError(
                    f"{len(running)} exports are running, the most this server runs at once "
                    f"({', '.join(e.model for e in running)}); wait for one to finish and try again"
                )
            export_id = "exp-" + secrets.token_hex(6)
            quant = (body.quant or "f16") if body.format == "gguf" else None
            export = Export(
                export_id, ref, body.format, quant, self.root / export_id, body.register_version, base
            )
            argv = worker_argv("models", "export", "--format", FORMATS[body.format], "-o", str(export.output))
            argv += ["--quant", quant] if quant else []
            argv += ["--base", base] if base else []
            argv += ["--json", "--progress-file", str(export.progress_file), "--", str(path)]
            env = {"TUNEFORGE_HOME": str(self.ctx.home)}
            export.folder.mkdir(parents=True)
            export.save()
            self.ctx.executor.submit(Launch(export_id, argv, export.folder, env=env))
            self.exports[export_id] = export
            self._forget_old()
        threading.Thread(target=self._follow, args=(export,), name=export_id, daemon=True).start()
        return export

    def get(self, name: str, export_id: str) -> Export:
        with self.lock:
            export = self.exports.get(export_id)
        if export is None or export.model.partition("@")[0] != name:
            raise NotFoundError(
                f"no export {export_id!r} of {name!r} (only the newest {KEEP_FINISHED} finished exports are "
                f"kept; GET /api/v1/models/{name}/exports lists them)"
            )
        return export

    def list(self, name: str) -> list[dict]:
        with self.lock:
            mine = [e for e in self.exports.values() if e.model.partition("@")[0] == name]
            return [e.as_dict() for e in sorted(mine, key=lambda e: e.started_at, reverse=True)]

    def file(self, name: str, export_id: str, filename: str | None) -> Path:
        """A file of a finished export: ``filename``, or the GGUF file when none is named."""
        export = self.get(name, export_id)
        if export.state != "succeeded":
            raise ConflictError(f"export {export_id} is {export.state}: nothing to download yet")
        if filename is None:
            ggufs = sorted(export.output.glob("*.gguf"))
            if not ggufs:
                names = [f["path"] for f in fmt.list_files(export.output)]
                raise ConfigError(f"export {export_id} is a folder: name one of its files ({names})")
            return ggufs[0]
        target = fmt.safe_path(export.output, filename)
        if target is None or not target.is_file():
            raise NotFoundError(f"export {export_id} has no file {filename!r}")
        return target

    def _follow(self, export: Export) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        status = self.ctx.executor.poll(export.id)
        while status is not None and status.running and time.monotonic() < deadline:
            time.sleep(POLL_S)
            status = self.ctx.executor.poll(export.id)
        error = None
        if status is not None and status.running:
            self.ctx.executor.cancel(export.id, grace_s=5)
            error = f"the export ran past {TIMEOUT_S} s and was stopped"
        elif status is None or status.exit_code != 0:
            error = _worker_error(export)
        registered = None
        if error is None and export.register:
            try:
                registered = self._register(export)
            except Exception as exc:  # the export itself succeeded: say why registering did not
                log.exception("export %s: registering failed", export.id)
                error = f"exported, but registering the merged folder failed: {exc}"
        with self.lock:
            export.as_dict()  # the last progress line
            export.state = "failed" if error else "succeeded"
            export.error, export.registered = error, registered
            export.finished_at = time.time()
        if error:
            shutil.rmtree(export.output, ignore_errors=True)  # never a partial export to download
        export.save()

    def _register(self, export: Export) -> str:
        name = export.model.partition("@")[0]
        row = registry.register_folder(
            self.ctx, name, export.base or "", export.output, f"merged:{export.model}", export.model
        )
        return f"{row.name}@{row.version}"

    def _forget_old(self) -> None:
        finished = [e for e in self.exports.values() if e.state != "running"]
        finished.sort(key=lambda e: e.started_at)
        for export in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.exports[export.id]
            shutil.rmtree(export.folder, ignore_errors=True)  # no longer listed: its files would only pile up


def _worker_error(export: Export) -> str:
    """The worker's own one-line reason (the CLI prints ``error: …`` last), else a pointer to its log."""
    data, _ = fmt.read_bytes(export.folder / fmt.WORKER_LOG, 0, 1 << 20)
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    said = next((ln for ln in reversed(lines) if ln.startswith(("error: ", "internal error: "))), None)
    if said is None:
        return f"the export worker failed: see {export.folder}"
    return said.removeprefix("error: ")[:4000]  # the record stays far below RECORD_MAX
