"""The job folder as the worker's report: events, metrics, log, TensorBoard, checkpoints, a loss plot.

Anyone (the platform, a person with `tail -f`) learns what a run is doing by reading these files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR  # the trainer's checkpoint-N

from tuneforge.jobs import folder as fmt  # the folder's format, shared with the control plane

log = logging.getLogger(__name__)


class JobFolder:
    def __init__(self, root: Path):
        from .launch import is_main_process

        self.root = Path(root)
        self.main = is_main_process()  # in a multi-GPU run only rank 0 reports
        self.checkpoints = self.root / fmt.CHECKPOINTS_DIR
        self.final = self.root / fmt.FINAL_DIR
        self.tensorboard = self.root / fmt.TENSORBOARD_DIR

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        if not self.main:  # rank 0 may already be writing its first checkpoint-N
            return
        # Half-written checkpoints from a killed run are never trusted.
        for p in self.checkpoints.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            shutil.rmtree(p, ignore_errors=True)

    def event(self, name: str, **fields) -> None:
        if not self.main:
            return
        fmt.append_event(self.root, name, **fields)

    def metric(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.root / fmt.METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        # A run killed mid-write leaves a partial last line: skipped, so resuming it still works.
        return fmt.read_all_jsonl(self.root / fmt.METRICS_FILE)

    def counters_at(self, step: int) -> dict:
        """Tokens seen and trained and the wall time of the run up to ``step``, from its metrics.

        Every checkpoint step is a logging step, so a run resumed from step N continues these figures
        from the last records logged at N (an earlier attempt may have logged past N: those are ignored).
        """
        at = [m for m in self.read_metrics() if m.get("step") == step]
        tokens = [m for m in at if "tokens_seen" in m]
        return {
            "seen": tokens[-1]["tokens_seen"] if tokens else 0,
            "trained": tokens[-1].get("trained_tokens", 0) if tokens else 0,
            "wall_time": max((m.get("wall_time", 0) for m in at), default=0),
        }

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        return fmt.step_checkpoints(self.root)  # the one reader the control plane uses too

    def resume_path(self, which: str) -> Path | None:
        steps = self.step_checkpoints()
        if which == "latest":
            return steps[-1][1] if steps else None
        for n, p in steps:
            if fmt.step_name(n) == which:
                return p
        return None

    @contextlib.contextmanager
    def logging_to_file(self):
        """INFO and up go to log.txt; the console keeps its own level. Restored afterwards.

        Of several ranks only rank 0 writes log.txt; every rank's output is in its own logs/rank-N.txt."""
        if not self.main:
            yield
            return
        handler = logging.FileHandler(self.root / fmt.LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        old_level = root.level
        others = [(h, h.level) for h in root.handlers]
        if root.level > logging.INFO:
            root.setLevel(logging.INFO)
            for h, level in others:  # the console stays as quiet as it was
                h.setLevel(max(level, old_level))
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()
            root.setLevel(old_level)
            for h, level in others:
                h.setLevel(level)


class StopFlag:
    """SIGTERM asks the run to checkpoint and stop at the next step boundary. A Ray Train worker runs its
    recipe in a thread, where no signal arrives: its driver's request file (``STOP_REQUEST`` in the job
    folder, written by ray_train.py on the driver's SIGTERM) asks instead."""

    def __init__(self, request_file: Path | None = None):
        self.reason: str | None = None
        self.request_file = request_file

    def check(self) -> str | None:
        """The reason to stop, if asked (the request file is looked at once a step: a stat)."""
        if self.reason is None and self.request_file is not None and self.request_file.exists():
            self.reason = "SIGTERM"  # the driver's
            log.warning("the run's driver was asked to stop: saving a checkpoint and stopping")
        return self.reason

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # a Ray Train worker: the request file asks instead (check)

        def handler(signum, frame):
            self.reason = signal.Signals(signum).name
            log.warning("received %s: saving a checkpoint and stopping", self.reason)

        signal.signal(signal.SIGTERM, handler)


class Reporter(TrainerCallback):
    """Writes metrics/events/TensorBoard, turns checkpoints into atomic step-N folders, honours SIGTERM."""

    def __init__(
        self, folder: JobFolder, stop: StopFlag, keep: int, show_bar: bool, trackers=None, select=None
    ):
        self.folder, self.stop, self.keep = folder, stop, keep
        self.select = select  # spec.SelectSpec: which eval metric marks the best checkpoint (best.json)
        self.trackers = trackers  # tracking.Trackers: MLflow/W&B/SwanLab get each metrics.jsonl record
        # Filled by trainers that count tokens (CausalLMTrainer); stays zero for TRL's DPO loop.
        self.tokens = {"seen": 0, "trained": 0}
        self.show_bar = show_bar
        self.start = time.time()
        self.last = (self.start, 0)
        self.writer = None
        self.bar = None

    # -- lifecycle
    def on_train_begin(self, args, state, control, **kw):
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is None and self.folder.main:
            self.writer = SummaryWriter(str(self.folder.tensorboard))
        now = time.time()
        self.start = now
        if state.global_step:  # resumed from a checkpoint: continue its counts and clock
            before = self.folder.counters_at(state.global_step)
            self.tokens.update(seen=before["seen"], trained=before["trained"])  # shared with the trainer
            self.start = now - before["wall_time"]
        self.last = (now, self.tokens["seen"])
        self.folder.event(fmt.TRAINING, max_steps=state.max_steps, step=state.global_step)
        if self.show_bar:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task(
                "train", total=state.max_steps, completed=state.global_step, info=""
            )

    def on_step_begin(self, args, state, control, **kw):
        # Dropout masks as a function of (seed, step): a resumed run draws exactly what an uninterrupted
        # one would, whatever else consumed random numbers around the checkpoint.
        import torch

        torch.manual_seed(args.seed * 100_003 + state.global_step)

    def on_step_end(self, args, state, control, **kw):
        if self.bar:
            self.bar.update(self.task, completed=state.global_step)
        self.stop.check()
        if args.world_size > 1:
            self._stop_together()
        if self.stop.reason:
            control.should_save = True
            control.should_training_stop = True
        self._log_at_checkpoint(control)

    def _stop_together(self) -> None:
        """Of several ranks, all stop at the same step when any was asked to: a rank that stopped alone
        would leave the others waiting in the next step's gradient all-reduce."""
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            return
        flag = torch.tensor([1 if self.stop.reason else 0], device=_collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not self.stop.reason:
            self.stop.reason = "SIGTERM"  # sent to another rank

    def on_epoch_end(self, args, state, control, **kw):
        self.folder.event(fmt.EPOCH_DONE, epoch=round(state.epoch or 0, 4), step=state.global_step)
        self._log_at_checkpoint(control)  # save_strategy "epoch" decides to save here

    @staticmethod
    def _log_at_checkpoint(control) -> None:
        # A checkpoint is also a logging step: the Trainer's running loss is not saved with it, so a
        # run resumed there could not finish the open logging window the way an uninterrupted run does.
        if control.should_save:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero:
            return
        logs = dict(logs or {})
        now = time.time()
        seen = self.tokens["seen"]
        figures: dict = {}
        if "loss" in logs:
            dt = now - self.last[0]
            figures.update(loss=logs["loss"], lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"))
            if seen:  # recipes that count tokens (SFT, pretraining); TRL's DPO loop does not
                figures.update(
                    tokens_seen=seen,
                    trained_tokens=self.tokens["trained"],
                    tokens_per_s=round((seen - self.last[1]) / dt, 2) if dt > 0 else None,
                )
            self.last = (now, seen)
        # Method-specific figures (eval_*, DPO's rewards/margins, …) are kept under their own names.
        skip = {"learning_rate", "epoch", "total_flos", "train_samples_per_second", "train_steps_per_second"}
        for key, value in logs.items():
            if key not in figures and key not in skip and isinstance(value, int | float):
                figures[key] = value
        if not figures:
            return
        step = state.global_step
        record = {"step": step, "epoch": round(state.epoch or 0, 4), "wall_time": round(now - self.start, 3)}
        record.update(figures)
        self.folder.metric(record)
        if self.trackers:
            self.trackers.log(record)
        for key, value in figures.items():
            if isinstance(value, int | float):
                self.writer.add_scalar(
                    f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}", value, step
                )
        self.writer.flush()
        line = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if v is not None
        )
        log.info(line)
        if self.bar and "loss" in record:
            self.bar.update(self.task, info=f"loss {record['loss']:.4f}")
        elif not self.bar:
            print(line, file=sys.stderr, flush=True)
        if "eval_loss" in record:
            self.folder.event(fmt.EVAL_DONE, step=state.global_step, eval_loss=record["eval_loss"])

    def on_save(self, args, state, control, **kw):
        # The trainer has finished writing checkpoint-N (weights, optimizer, scheduler, RNG, trainer state);
        # only now does it become step-N, in one rename, so resume never trusts a half-written folder.
        src = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.world_size > 1:  # every rank has written its part (its RNG state) before the rename
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
        if not state.is_world_process_zero or not src.exists():
            return
        dst = self.folder.checkpoints / fmt.step_name(state.global_step)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(src, dst)
        self.folder.event(
            fmt.CHECKPOINT_SAVED, step=state.global_step, path=str(dst.relative_to(self.folder.root))
        )
        best = self._mark_best(state.global_step)
        for _, old in self.folder.step_checkpoints()[: -self.keep]:
            if old.name != best:  # the best checkpoint outlives the rotation
                shutil.rmtree(old, ignore_errors=True)

    def _mark_best(self, step: int) -> str | None:
        """Mark checkpoint ``step`` best when its eval metric (logged at that step, just before the save)
        beats the marked one; returns the best checkpoint's name."""
        if self.select is None:
            return None
        root, metric = self.folder.root, self.select.metric
        best = fmt.read_best(root)
        logged = [m[metric] for m in self.folder.read_metrics() if m.get("step") == step and metric in m]
        value = logged[-1] if logged else None
        if isinstance(value, int | float):
            better = best is None or (
                value < best["value"] if self.select.mode == "min" else value > best["value"]
            )
            if better:
                best = {"checkpoint": fmt.step_name(step), "step": step, "metric": metric,
                        "mode": self.select.mode, "value": value}  # fmt: skip
                fmt.write_best(root, best)
                self.folder.event(fmt.BEST_CHECKPOINT, **best)
        return best["checkpoint"] if best else None

    def on_train_end(self, args, state, control, model=None, **kw):
        if self.bar:
            self.bar.stop()
            self.bar = None
        if args.world_size > 1 and model is not None:
            from .model import trainable_digest

            # DDP keeps the ranks' weights equal; a digest on each rank's log shows that it did (a rank
            # restarted from another checkpoint, or one that skipped a step, would differ).
            log.info("rank %d of %d: trainable weights sha256 %s", args.process_index, args.world_size,
                     trainable_digest(model))  # fmt: skip

    def close(self) -> None:
        """After the final evaluation: the last metrics are in, the TensorBoard file can close."""
        if self.bar:
            self.bar.stop()
        if self.writer:
            self.writer.close()


def _collective_device():
    """Where a tensor for a collective lives: the rank's GPU under NCCL, else the CPU (gloo)."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def write_loss_svg(metrics: list[dict], path: Path) -> None:
    """A small dependency-free SVG of training (and eval) loss against step."""
    train = [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    if not train and not evals:
        return
    points = train + evals
    w, h, pad = 640, 360, 48
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points) or 1
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def xy(p):
        return (
            pad + (p[0] - x0) / (x1 - x0) * (w - 2 * pad),
            h - pad - (p[1] - y0) / (y1 - y0) * (h - 2 * pad),
        )

    def line(series, color):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(xy, series))
        return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>' if series else ""

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>',
        f'<text x="{pad}" y="{pad - 8}">loss {y1:.3f}</text>',
        f'<text x="{pad}" y="{h - pad + 16}">{y0:.3f} · step {x0}</text>',
        f'<text x="{w - pad}" y="{h - pad + 16}" text-anchor="end">step {x1}</text>',
        line(train, "#1f77b4"),
        line(evals, "#d62728"),
        f'<text x="{w - pad}" y="{pad - 8}" text-anchor="end" fill="#1f77b4">train</text>',
        f'<text x="{w - pad - 50}" y="{pad - 8}" text-anchor="end" fill="#d62728">'
        f"{'eval' if evals else ''}</text>",
        "</svg>",
    ]
    path.write_text("\n".join(svg))
