"""One training run: check, prepare the job folder, run the method's recipe, report how it ended."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import Cancelled, ConflictError, ResourceError
from tuneforge.jobs import folder as fmt  # the job folder's names, shared with the control plane
from tuneforge.settings import get_settings
from tuneforge.spec import JobSpec, dump_spec

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    folder: Path
    metrics: dict


OOM_HINT = (
    "out of memory. Lower train.batch_size or data.max_len, turn on train.gradient_checkpointing, "
    "or use finetuning: qlora on a GPU."
)


def default_output_dir(spec: JobSpec) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return get_settings().jobs_dir / f"{spec.name or spec.method}-{stamp}"


def run_training(
    spec: JobSpec,
    output_dir: str | Path | None = None,
    callbacks=(),
    show_bar: bool = False,
    spec_written: bool = False,
    folder_checked: bool = False,
    stop_on_request: bool = False,
) -> RunResult:
    """``spec_written``: the folder's spec.yaml is the spec the server resolved; it is not written again.
    ``folder_checked``: a rank of a group whose launcher checked the folder (its siblings write there).
    ``stop_on_request``: a Ray Train worker, which no signal reaches: the driver's request file stops it.
    """
    from . import dpo, grpo, kto, orpo, pretrain, ray_train, rm, sft, simpo
    from .context import RunContext
    from .data import load_spec_records
    from .leakage import check_eval_overlap
    from .model import precision_note, preflight
    from .reporting import JobFolder, StopFlag, write_loss_svg
    from .tracking import Trackers

    root = Path(output_dir or spec.output_dir or default_output_dir(spec))
    if ray_train.wanted(spec):  # several processes placed by Ray: this process only drives them
        refuse_used_folder(spec, root)
        metrics = ray_train.run(spec, root.resolve(), callbacks, spec_written, run_training)
        return RunResult(root.resolve(), metrics)
    # Everything that can be checked without a model is checked before the folder exists.
    runtime = preflight(spec)
    train_records, val_records = load_spec_records(spec)
    overlap = check_eval_overlap(spec, train_records, val_records)  # strict: refused here

    folder = JobFolder(root)
    # Of several ranks, rank 0 alone checks and prepares the folder (the others would find its start).
    if folder.main and not folder_checked:
        refuse_used_folder(spec, root)
    folder.prepare()
    resume = folder.resume_path(spec.resume_from) if spec.resume_from else None
    if spec.resume_from and resume is None:
        if spec.resume_from != "latest":
            raise ResourceError(
                f"{folder.checkpoints}: no checkpoint {spec.resume_from}; have "
                f"{[fmt.step_name(n) for n, _ in folder.step_checkpoints()]}."
            )
        log.warning("no checkpoint to resume from in %s; starting from the beginning", folder.checkpoints)
    resolved = spec.model_copy(update={"output_dir": str(folder.root)})
    if not spec_written and folder.main:
        (folder.root / fmt.SPEC_FILE).write_text(dump_spec(resolved))
    stop = StopFlag(folder.root / fmt.STOP_REQUEST if stop_on_request else None)
    stop.install()
    ctx = RunContext(
        spec, folder, runtime, train_records, val_records, stop, resume, tuple(callbacks), show_bar
    )
    recipe = {
        "sft": sft.run,
        "dpo": dpo.run,
        "kto": kto.run,
        "orpo": orpo.run,
        "simpo": simpo.run,
        "pretrain": pretrain.run,
        "rm": rm.run,
        "grpo": grpo.run,
    }[spec.method]
    with folder.logging_to_file():
        log.info("precision: %s", precision_note(runtime))
        folder.event(
            fmt.STARTED,
            pid=os.getpid(),
            method=spec.method,
            finetuning=spec.finetuning,
            device=runtime.device,
            dtype=runtime.dtype_name,
            precision=precision_note(runtime),
            resumed_from=resume.name if resume else None,
        )
        if overlap is not None:
            folder.event(fmt.EVAL_OVERLAP, **overlap)
        try:
            if folder.main:  # in a multi-GPU run only rank 0 reports
                ctx.trackers = Trackers(
                    spec.train.report_to,
                    folder.root,
                    spec.name or folder.root.name,
                    resolved.model_dump(mode="json"),
                )
            metrics = recipe(ctx)
        except Exception as exc:
            import torch

            if ctx.trackers:
                ctx.trackers.finish(fmt.FAILED)
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                folder.event(fmt.FAILED, reason=OOM_HINT)
                raise ResourceError(OOM_HINT) from exc
            folder.event(fmt.FAILED, reason=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if folder.main:
                write_loss_svg(folder.read_metrics(), folder.root / fmt.LOSS_SVG)
    if ctx.trackers:  # after final/ is written: its path and lineage go with the run
        ctx.trackers.finish(fmt.CANCELLED if stop.reason else fmt.FINISHED)
    if stop.reason:
        folder.event(fmt.CANCELLED, reason=stop.reason, step=_last_step(folder))
        raise Cancelled(
            f"stopped by {stop.reason}; checkpoint saved in {folder.checkpoints}. Resume with "
            f"`tuneforge train {folder.root / fmt.SPEC_FILE} --resume`."
        )
    folder.event(fmt.FINISHED, metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)})
    return RunResult(folder.root, metrics)


def refuse_used_folder(spec: JobSpec, root: Path) -> None:
    if not spec.resume_from and fmt.has_started(root):
        raise ConflictError(
            f"{root} already holds a run; continue it with --resume (resume_from: latest) or "
            "choose another --output."
        )


def _last_step(folder) -> int | None:
    steps = folder.step_checkpoints()
    return steps[-1][0] if steps else None
