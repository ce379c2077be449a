"""Jobs of kind ``command``: a user's own script with the platform's queue, GPU slots, logs, restart
policy and registry. Uploaded code is kept as a content-addressed zip (checked at upload with the data
package's zip rules) and unpacked into each job's folder at creation, so nothing runs in place.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from tuneforge.data.archives import unpack_zip
from tuneforge.data.limits import FileProblem, Limits
from tuneforge.errors import ForbiddenError, NotFoundError, TuneforgeError
from tuneforge.jobs import command as cmd
from tuneforge.jobs.ranks import gpu_shortfall
from tuneforge.settings import env_name

from . import catalog, queues
from .context import Platform
from .db import Job
from .schemas import CommandJobCreate, SpecProblems

log = logging.getLogger(__name__)
CODE_DIR = "code"


def require_enabled(ctx: Platform) -> None:
    if not ctx.settings.allow_command_jobs:
        raise ForbiddenError(
            f"command jobs are turned off on this server ({env_name('allow_command_jobs')}=false); "
            "submit a training spec instead, or ask the server's operator to allow them",
        )


def code_root(ctx: Platform) -> Path:
    return ctx.home / CODE_DIR


def code_path(ctx: Platform, code_id: str) -> Path:
    path = code_root(ctx) / f"{code_id}.zip"
    if not path.is_file():
        raise NotFoundError(f"no uploaded code {code_id!r}: upload it with POST /api/v1/jobs/code")
    return path


def _limits() -> Limits:
    return Limits.from_settings()


def store_code(ctx: Platform, upload: Path) -> dict:
    """Check an uploaded zip (unpacking it once into a scratch folder) and keep it by its content."""
    digest = hashlib.sha256()
    with open(upload, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    code_id = f"code-{digest.hexdigest()[:12]}"
    scratch = Path(tempfile.mkdtemp(prefix=".check-", dir=upload.parent))
    try:
        with open(upload, "rb") as fh:
            files = unpack_zip(fh, "code.zip", scratch, _limits())
    except FileProblem as exc:
        raise SpecProblems([{"loc": ["body", "file"], "msg": str(exc.problem)}]) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    root = code_root(ctx)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{code_id}.zip"
    if not target.exists():
        shutil.copyfile(upload, target.with_suffix(".part"))
        target.with_suffix(".part").rename(target)
    return {"id": code_id, "bytes": target.stat().st_size, "files": files}


def _mounts(ctx: Platform, body: CommandJobCreate, problems: list[dict]) -> list[cmd.Mount]:
    from tuneforge.models.store import stored_model_dir

    mounts: list[cmd.Mount] = []
    taken: list[tuple[str, list]] = [(body.output, ["body", "output"])]
    if why := cmd.relative_path_problem(body.output):
        problems.append({"loc": ["body", "output"], "msg": why})
    for kind, items in (("dataset", body.datasets), ("model", body.models)):
        for i, m in enumerate(items):
            loc = ["body", f"{kind}s", i]
            if why := cmd.relative_path_problem(m.path):
                problems.append({"loc": [*loc, "path"], "msg": why})
                continue
            clash = next((where for p, where in taken if cmd.overlap(p, m.path)), None)
            if clash is not None:
                problems.append({"loc": [*loc, "path"], "msg": f"overlaps {'.'.join(map(str, clash[1:]))}"})
                continue
            taken.append((m.path, loc))
            if kind == "dataset":
                try:
                    row = catalog.get_dataset_row(ctx.store, m.name)
                    target = catalog.dataset_folder(row) / "files"
                except NotFoundError:
                    problems.append(
                        {"loc": [*loc, "name"], "msg": f"no stored dataset {m.name!r}: upload it first"}
                    )
                    continue
                except Exception as exc:  # not ready
                    problems.append({"loc": [*loc, "name"], "msg": str(exc)})
                    continue
                mounts.append(cmd.Mount(kind, row.id, m.path, target, alias=m.name))
            else:
                folder = stored_model_dir(m.name)
                if folder is None:
                    problems.append(
                        {
                            "loc": [*loc, "name"],
                            "msg": f"no model {m.name!r} on the server: pull or import it",
                        }
                    )
                    continue
                mounts.append(cmd.Mount(kind, m.name, m.path, folder))
    return mounts


def validate(ctx: Platform, body: CommandJobCreate) -> list[cmd.Mount]:
    problems: list[dict] = []
    for key, value in body.env.items():
        if not cmd.ENV_NAME_RE.match(key):
            problems.append(
                {"loc": ["body", "env", key], "msg": "not a variable name ([A-Za-z_][A-Za-z0-9_]*)"}
            )
        elif key in cmd.RESERVED_ENV:
            problems.append({"loc": ["body", "env", key], "msg": "set by the server for each job"})
        if "\x00" in value or "\x00" in key:
            problems.append({"loc": ["body", "env", key], "msg": "NUL bytes are refused"})
    for i, arg in enumerate(body.command):
        if "\x00" in arg:
            problems.append({"loc": ["body", "command", i], "msg": "NUL bytes are refused"})
    if why := gpu_shortfall(body.gpus, ctx.executor.gpu_count):
        problems.append({"loc": ["body", "gpus"], "msg": why})
    if why := queues.queue_problem(ctx.settings, body.queue, body.workers, body.gpus):
        problems.append({"loc": ["body", "queue"], "msg": why})
    mounts = _mounts(ctx, body, problems)
    if body.code:
        try:
            code_path(ctx, body.code)
        except NotFoundError as exc:
            problems.append({"loc": ["body", "code"], "msg": str(exc)})
    if problems:
        raise SpecProblems(problems)
    return mounts


def prepare(ctx: Platform, body: CommandJobCreate, job_id: str) -> tuple[dict, Path]:
    """Validate, then build the job's folder (code unpacked, mounts linked) in a scratch place: the request
    to keep and the folder, for ``jobs.submit_command`` to queue. A refused job leaves no folder behind."""
    require_enabled(ctx)
    mounts = validate(ctx, body)
    request = body.model_dump(mode="json")
    request["datasets"] = [{"name": m.name, "path": m.path} for m in mounts if m.kind == "dataset"]
    ctx.jobs_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{job_id}-", dir=ctx.jobs_dir))
    try:
        work = scratch / cmd.WORK_DIR
        work.mkdir()
        if body.code:
            with open(code_path(ctx, body.code), "rb") as fh:
                unpack_zip(fh, f"{body.code}.zip", work, _limits())
        problems = []
        for i, m in enumerate(mounts):
            if why := cmd.collision(work, m.path):
                problems.append({"loc": ["body", f"{m.kind}s", i, "path"], "msg": why})
        if why := cmd.collision(work, body.output, dir_ok=True):
            problems.append({"loc": ["body", "output"], "msg": why})
        if problems:
            raise SpecProblems(problems)
        cmd.prepare_folder(scratch, mounts, body.output, request)
    except FileProblem as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise SpecProblems([{"loc": ["body", "code"], "msg": str(exc.problem)}]) from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    # The links point at absolute store paths, so the folder can move into place whole.
    return request, scratch


def read_only_paths(ctx: Platform, spec: dict) -> list[str]:
    """What a command job's runner mounts read-only: the stores its mounts point into, whole (so that a
    ``..`` from a mounted folder does not reach a writable sibling), and any mount target outside them."""
    from tuneforge.data.store import datasets_root
    from tuneforge.models.store import models_root

    targets: list[tuple[Path, Path]] = []  # (store root, what the mount links to)
    for d in spec.get("datasets") or []:
        try:
            targets.append(
                (datasets_root(), catalog.dataset_folder(catalog.get_dataset_row(ctx.store, d["name"])))
            )
        except (
            TuneforgeError
        ):  # deleted since it was submitted: its link dangles, there is nothing to protect
            continue
    targets += [(models_root(), models_root() / m["name"]) for m in spec.get("models") or []]
    paths: list[str] = []
    for store, target in targets:
        store, target = store.resolve(), target.resolve()
        chosen = store if target == store or store in target.parents else target
        if chosen.is_dir() and str(chosen) not in paths:
            paths.append(str(chosen))
    return paths


RUNNER = [
    sys.executable,
    "-I",
    "-m",
    "tuneforge.jobs.command_runner",
]  # -I: the job's code is not on sys.path


def launch_parts(ctx: Platform, row: Job) -> tuple[list[str], dict[str, str], Path]:
    """argv, the clean environment and the working directory of a command job's next attempt.

    The command runs under the runner (jobs/command_runner.py), which mounts the stores read-only around
    it and records its exit code.
    """
    root = Path(row.folder)
    env = cmd.clean_env(root, row.id, row.spec.get("env") or {})
    argv = [*RUNNER, "--folder", str(root), "--attempt", str(row.attempt + 1)]
    for path in read_only_paths(ctx, row.spec):
        argv += ["--read-only", path]
    if (row.spec.get("workers") or 1) > 1:
        argv += ["--workers", str(row.spec["workers"])]
    if not ctx.settings.isolate_command_mounts:
        argv += ["--not-enforced", f"turned off on this server ({env_name('isolate_command_mounts')}=false)"]
    return [*argv, "--", *row.spec["command"]], env, root / cmd.WORK_DIR
