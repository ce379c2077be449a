"""The OpenAI fine-tuning API's service: files and fine-tuning jobs in OpenAI's shapes, over the platform's
datasets, jobs and registry (the routes in ``routes/openai_ft.py`` parse and answer).

A file is a stored dataset (validated the same way); a fine-tuning job is a tuneforge job from the sft-lora
or dpo-lora template; on success its output is registered as the model named ``ft:BASE:SUFFIX:ID``.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import ConfigError, ConflictError, DataError, NotFoundError
from tuneforge.jobs import folder as fmt
from tuneforge.names import name_from_file
from tuneforge.spec import JobSpec

from . import catalog, registry
from . import jobs as service
from .context import Platform
from .db import Dataset, File, Job
from .schemas import FineTuneCreate, Hyper

STATUS = {
    "queued": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
AUTO_EPOCHS, AUTO_BATCH = 3, 4


# -- files ---------------------------------------------------------------------------------------------


def file_dict(row: File) -> dict:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": int(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
    }


def store_file(ctx: Platform, upload: catalog.Upload, filename: str, purpose: str) -> dict:
    """An uploaded JSONL file (already in ``upload``) validated as a dataset and kept as a File."""
    # OpenAI's DPO lines are a format of the data package (openai_preference): the file is read as
    # sent, by the same reader as any dataset (encodings, bounds and line numbers included).
    try:
        ds = catalog.ingest(
            ctx.store, upload, name_from_file(Path(filename).stem), None, {}, ctx.max_upload_bytes
        )
    except DataError as exc:
        raise ConfigError(
            f"invalid training file: {len(exc.problems)} problem(s): "
            + "; ".join(str(p) for p in exc.problems[:20])
        ) from None
    row = File(
        id=f"file-{secrets.token_hex(12)}",
        filename=filename,
        purpose=purpose,
        bytes=upload.bytes,
        dataset_id=ds.id,
        created_at=time.time(),
    )
    with ctx.store.session() as s:
        s.add(row)
    return file_dict(row)


def list_files(ctx: Platform, purpose: str | None) -> dict:
    with ctx.store.reading() as s:
        q = select(File).order_by(File.created_at.desc())
        if purpose:
            q = q.where(File.purpose == purpose)
        return {"object": "list", "data": [file_dict(f) for f in s.scalars(q)], "has_more": False}


def get_file(ctx: Platform, file_id: str) -> File:
    with ctx.store.reading() as s:
        row = s.get(File, file_id)
    if row is None:
        raise NotFoundError(f"No such File object: {file_id}")
    return row


def delete_file(ctx: Platform, file_id: str) -> dict:
    row = get_file(ctx, file_id)
    with ctx.store.session() as s:
        s.delete(s.get(File, file_id))
        others = s.scalars(select(File).where(File.dataset_id == row.dataset_id)).first()
    if others is None:  # the dataset goes with its last file, unless a job still needs it
        try:
            catalog.delete_dataset(ctx.store, row.dataset_id)
        except (ConflictError, NotFoundError):
            pass
    return {"id": file_id, "object": "file", "deleted": True}


# -- fine-tuning jobs ------------------------------------------------------------------------------------


def _dataset_of(ctx: Platform, file_id: str, param: str) -> Dataset:
    try:
        row = get_file(ctx, file_id)
    except NotFoundError:
        raise ConfigError(f"{param}: no file {file_id!r}; upload it with purpose 'fine-tune'") from None
    return catalog.get_dataset_row(ctx.store, row.dataset_id)


def _spec_from(ctx: Platform, body: FineTuneCreate) -> tuple[JobSpec, dict, dict]:
    method = body.method or {"type": "supervised"}
    kind = method.get("type", "supervised")
    if kind not in ("supervised", "dpo"):
        raise ConfigError(f"method.type {kind!r}: this server runs 'supervised' and 'dpo'")
    hyper = body.hyperparameters or Hyper()
    inner = (method.get(kind) or {}).get("hyperparameters")
    if inner:
        hyper = Hyper.model_validate(inner)
    train_ds = _dataset_of(ctx, body.training_file, "training_file")
    val_ds = _dataset_of(ctx, body.validation_file, "validation_file") if body.validation_file else None
    template = "dpo-lora" if kind == "dpo" else "sft-lora"
    data = service.build_spec(
        None,
        template,
        body.model,
        [train_ds.id],
        val_ds.id if val_ds else None,
        (body.tuneforge or {}).get("overrides"),
        None,
    )
    data.setdefault("name", body.suffix or "ft")
    train = data.setdefault("train", {})
    epochs = AUTO_EPOCHS if hyper.n_epochs == "auto" else hyper.n_epochs
    batch = AUTO_BATCH if hyper.batch_size == "auto" else hyper.batch_size
    train.setdefault("epochs", epochs)
    train.setdefault("batch_size", batch)
    if body.seed is not None:
        train["seed"] = body.seed
    if kind == "dpo" and hyper.beta != "auto":
        train["dpo_beta"] = hyper.beta
    multiplier = 1.0 if hyper.learning_rate_multiplier == "auto" else hyper.learning_rate_multiplier
    spec = service.validate_spec(ctx, data)
    if "learning_rate" not in train:
        spec.train.learning_rate = spec.learning_rate * multiplier
    resolved = {
        "n_epochs": spec.train.epochs
        if spec.train.epochs != int(spec.train.epochs)
        else int(spec.train.epochs),
        "batch_size": spec.train.batch_size,
        "learning_rate_multiplier": multiplier,
    }
    if kind == "dpo":
        resolved["beta"] = spec.train.dpo_beta
    return spec, {"type": kind, kind: {"hyperparameters": resolved}}, resolved


def ft_id(job_id: str) -> str:
    return "ft" + job_id  # job-abc → ftjob-abc


def job_id_of(ftjob: str) -> str:
    if not ftjob.startswith("ftjob-"):
        raise NotFoundError(f"No such fine-tuning job: {ftjob}")
    return ftjob[2:]


def ft_dict(row: Job) -> dict:
    o = (row.extra or {}).get("openai", {})
    error = None
    if row.state == "failed" and row.error:
        error = {"code": "job_failed", "message": row.error.get("message", "failed"), "param": None}
    return {
        "id": ft_id(row.id),
        "object": "fine_tuning.job",
        "created_at": int(row.created_at),
        "finished_at": int(row.finished_at) if row.finished_at else None,
        "model": row.spec.get("model"),
        "fine_tuned_model": o.get("fine_tuned_model"),
        "organization_id": "org-tuneforge",
        "result_files": [],
        "status": STATUS[row.state],
        "validation_file": o.get("validation_file"),
        "training_file": o.get("training_file"),
        "hyperparameters": o.get("hyperparameters", {}),
        "method": o.get("method"),
        "trained_tokens": (row.latest_metrics or {}).get("trained_tokens"),
        "error": error,
        "seed": row.spec.get("train", {}).get("seed", 42),
        "user_provided_suffix": o.get("suffix"),
        "estimated_finish": None,
        "integrations": [],
        "metadata": None,
    }


def create_job(ctx: Platform, body: FineTuneCreate) -> dict:
    spec, method, resolved = _spec_from(ctx, body)
    extra = {
        "openai": {
            "training_file": body.training_file,
            "validation_file": body.validation_file,
            "suffix": body.suffix,
            "hyperparameters": resolved,
            "method": method,
        }
    }
    return ft_dict(service.create_job(ctx, spec, extra=extra))


def list_jobs(ctx: Platform, after: str | None, limit: int) -> dict:
    with ctx.store.reading() as s:
        q = select(Job).where(Job.kind == "train").order_by(Job.created_at.desc(), Job.id.desc())
        if after:
            anchor = s.get(Job, job_id_of(after))
            if anchor is not None:
                q = q.where(Job.created_at < anchor.created_at)
        rows = [r for r in s.scalars(q.limit(limit + 1)) if "openai" in (r.extra or {})]
    return {"object": "list", "data": [ft_dict(r) for r in rows[:limit]], "has_more": len(rows) > limit}


def get_job(ctx: Platform, ftjob: str) -> Job:
    try:
        row = service.get_job(ctx, job_id_of(ftjob))
    except NotFoundError:
        raise NotFoundError(f"No such fine-tuning job: {ftjob}") from None
    if "openai" not in (row.extra or {}):
        raise NotFoundError(f"No such fine-tuning job: {ftjob}")
    return row


def cancel_job(ctx: Platform, ftjob: str) -> dict:
    return ft_dict(service.cancel_job(ctx, get_job(ctx, ftjob).id))


def _message(e: dict) -> tuple[str, str]:
    kind = e.get("event")
    if kind == fmt.FAILED:
        return "error", f"Job failed: {e.get('reason')}"
    if kind == fmt.RESTARTING:
        return "warn", f"Restarting (attempt {e.get('attempt')}): {e.get('reason')}"
    text = {
        fmt.QUEUED: "Job queued",
        fmt.LAUNCHED: "Worker launched",
        fmt.STARTED: "Fine-tuning job started",
        fmt.TRAINING: f"Training: {e.get('max_steps')} steps",
        fmt.CHECKPOINT_SAVED: f"Checkpoint saved at step {e.get('step')}",
        fmt.FINISHED: "The job has successfully completed",
        fmt.CANCELLED: "Job cancelled",
    }.get(kind, kind.replace("_", " ") if isinstance(kind, str) else "event")
    return "info", text


def list_events(ctx: Platform, ftjob: str, after: str | None, limit: int) -> dict:
    row = get_job(ctx, ftjob)
    root = Path(row.folder)
    items = []
    for e in fmt.read_all_jsonl(root / fmt.EVENTS_FILE):
        level, message = _message(e)
        items.append((e.get("time", 0), level, message, "message", None))
    start = row.started_at or row.created_at
    for m in fmt.read_all_jsonl(root / fmt.METRICS_FILE):
        if m.get("loss") is not None:  # null: a NaN loss (jobs/folder reads it so)
            data = {"step": m["step"], "train_loss": m["loss"]}
            items.append(
                (
                    start + m.get("wall_time", 0),
                    "info",
                    f"Step {m['step']}: training loss={m['loss']:.4f}",
                    "metrics",
                    data,
                )
            )
    items.sort(key=lambda x: x[0])
    events = [
        {
            "id": f"ftevent-{row.id[4:]}-{i}",
            "object": "fine_tuning.job.event",
            "created_at": int(t),
            "level": level,
            "message": message,
            "type": kind,
            "data": data,
        }
        for i, (t, level, message, kind, data) in enumerate(items)
    ][::-1]  # newest first, as the hosted API
    if after:
        ids = [e["id"] for e in events]
        events = events[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": events[:limit], "has_more": len(events) > limit}


def list_checkpoints(ctx: Platform, ftjob: str, after: str | None, limit: int) -> dict:
    row = get_job(ctx, ftjob)
    o = row.extra["openai"]
    model = o.get("fine_tuned_model") or ft_model_name(row)
    data = []
    for c in reversed(fmt.checkpoints_with_metrics(Path(row.folder))):
        metrics = {
            "step": float(c["step"]),
            "train_loss": c["train_loss"],
            "valid_loss": c["eval_loss"],
            "train_mean_token_accuracy": c["mean_token_accuracy"],
        }
        data.append(
            {
                "id": f"ftckpt-{row.id[4:]}-{c['step']}",
                "object": "fine_tuning.job.checkpoint",
                "created_at": int(c["created"]),
                "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{c['step']}",
                "fine_tuning_job_id": ft_id(row.id),
                "metrics": {k: v for k, v in metrics.items() if v is not None},
                "step_number": c["step"],
            }
        )
    if after:
        ids = [d["id"] for d in data]
        data = data[ids.index(after) + 1 :] if after in ids else []
    page = data[:limit]
    return {
        "object": "list",
        "data": page,
        "has_more": len(data) > limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def ft_model_name(row: Job) -> str:
    o = row.extra["openai"]
    return f"ft:{row.spec.get('model')}:{o.get('suffix') or 'tuneforge'}:{row.id[4:]}"


def register_before_success(ctx: Platform, s: Session, row: Job) -> None:
    """Supervisor hook, in the transaction that marks the job succeeded: an OpenAI job's output becomes
    the registered model it names, so a client never reads ``succeeded`` with ``fine_tuned_model: null``;
    a registration that fails makes the job failed with its message."""
    if "openai" not in (row.extra or {}):
        return
    name = ft_model_name(row)
    registry.register_in(s, row, None, name)
    extra = dict(row.extra)
    extra["openai"] = {**extra["openai"], "fine_tuned_model": name}
    row.extra = extra
