"""Registered models: a job's final output or one of its checkpoints, named and versioned, with lineage.

The weights stay in the job folder (a job with registered versions cannot be deleted); the row says
where they are and where they came from. ``name`` is the latest version, ``name@N`` a given one.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from sqlalchemy import func, select

from tuneforge.errors import ConflictError, NotFoundError
from tuneforge.jobs import folder as fmt

from .context import Platform
from .db import Job, RegisteredModel


def register(ctx: Platform, job_id: str, checkpoint: str | None, name: str) -> RegisteredModel:
    with ctx.store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        if job.kind != "train":
            raise ConflictError(f"job {job_id} is an {job.kind} job; register a training job's output")
        root = Path(job.folder)
        if checkpoint:
            path = fmt.safe_path(root / fmt.CHECKPOINTS_DIR, checkpoint)
            if path is None or not fmt.STEP_RE.match(checkpoint):
                names = [p.name for _, p in fmt.step_checkpoints(root)]
                raise NotFoundError(f"job {job_id} has no checkpoint {checkpoint!r}; it has {names}")
        else:
            if job.state != "succeeded":
                raise ConflictError(
                    f"job {job_id} is {job.state}: register a checkpoint (--checkpoint step-N) or wait"
                )
            path = root / fmt.FINAL_DIR
            if not path.is_dir():
                raise NotFoundError(f"job {job_id} has no final output")
        version = (
            s.scalar(select(func.max(RegisteredModel.version)).where(RegisteredModel.name == name)) or 0
        ) + 1
        spec = job.spec or {}
        data = spec.get("data", {})
        ckpts = {c["name"]: c for c in fmt.checkpoints_with_metrics(root)}
        row = RegisteredModel(
            id=f"rm-{secrets.token_hex(6)}",
            name=name,
            version=version,
            base_model=spec.get("model", ""),
            job_id=job.id,
            checkpoint=checkpoint or "final",
            path=str(path),
            lineage={
                "base_model": spec.get("model"),
                "job": job.id,
                "datasets": [d.get("path") for d in data.get("train", [])],
                "validation_dataset": (data.get("validation") or {}).get("path"),
                "method": spec.get("method"),
                "finetuning": spec.get("finetuning"),
                "spec": spec,
                "metrics": ckpts.get(checkpoint, {}) if checkpoint else job.latest_metrics,
            },
            created_at=time.time(),
        )
        s.add(row)
    return row


def resolve(ctx: Platform, ref: str) -> RegisteredModel:
    name, _, version = ref.partition("@")
    with ctx.store.reading() as s:
        q = select(RegisteredModel).where(RegisteredModel.name == name)
        if version:
            if not version.isdigit():
                raise NotFoundError(f"no registered model {ref!r}")
            q = q.where(RegisteredModel.version == int(version))
        row = s.scalars(q.order_by(RegisteredModel.version.desc())).first()
    if row is None:
        raise NotFoundError(f"no registered model {ref!r}")
    return row


def list_registered(ctx: Platform) -> list[RegisteredModel]:
    with ctx.store.reading() as s:
        return list(
            s.scalars(select(RegisteredModel).order_by(RegisteredModel.name, RegisteredModel.version))
        )


def delete_registered(ctx: Platform, ref: str) -> str:
    row = resolve(ctx, ref)
    with ctx.store.session() as s:
        s.delete(s.get(RegisteredModel, row.id))
    return f"{row.name}@{row.version}"


def registered_dict(row: RegisteredModel) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "ref": f"{row.name}@{row.version}",
        "base_model": row.base_model,
        "job": row.job_id,
        "checkpoint": row.checkpoint,
        "path": row.path,
        "lineage": row.lineage,
        "created_at": row.created_at,
    }


def job_is_registered(ctx: Platform, job_id: str) -> list[str]:
    with ctx.store.reading() as s:
        rows = s.scalars(select(RegisteredModel).where(RegisteredModel.job_id == job_id))
        return [f"{r.name}@{r.version}" for r in rows]


def model_in_use(ctx: Platform, name: str) -> str | None:
    """A queued/running job on this base model, or a deployment serving it."""
    from .deployments import in_use

    deployment = in_use(ctx, name)
    if deployment:
        return f"deployment {deployment}"
    with ctx.store.reading() as s:
        for job in s.scalars(select(Job).where(Job.state.in_(("queued", "running")))):
            if (job.spec or {}).get("model") == name or json.dumps(job.spec).find(f'"{name}"') >= 0:
                return job.id
    return None
