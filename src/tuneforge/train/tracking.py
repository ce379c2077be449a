"""Experiment trackers (MLflow, Weights & Biases, SwanLab): a copy of the job folder's report.

The job folder stays the truth; a tracker gets the same records as ``metrics.jsonl`` (same names, same
steps), the resolved spec as parameters, and the final model's path and lineage at the end. Each tool
reads its own environment variables (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, WANDB_PROJECT,
WANDB_MODE, SWANLAB_MODE, …). Importing this module imports none of them (the control plane uses
``missing_trackers`` to refuse a job before it is queued).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from tuneforge.errors import ConfigError, MissingExtraError
from tuneforge.jobs import folder as fmt

log = logging.getLogger(__name__)

# report_to name → (Python package, extra that installs it, what people call it)
TRACKERS = {
    "mlflow": ("mlflow", "mlflow", "MLflow"),
    "wandb": ("wandb", "wandb", "Weights & Biases"),
    "swanlab": ("swanlab", "swanlab", "SwanLab"),
}


def missing_trackers(report_to: list[str]) -> list[str]:
    """One message for each tracker whose package is not installed (found without importing it)."""
    out = []
    for name in report_to:
        if name in TRACKERS:
            module, extra, label = TRACKERS[name]
            if importlib.util.find_spec(module) is None:
                out.append(str(MissingExtraError(module, extra, f"train.report_to: {name} ({label})")))
    return out


def require_trackers(report_to: list[str]) -> None:
    if problems := missing_trackers(report_to):
        raise ConfigError("; ".join(problems))


def flatten(value, prefix: str = "") -> dict[str, str]:
    """The resolved spec as tracker parameters: ``train.learning_rate``, ``data.train.0.path`` …"""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value:
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: "" if value is None else str(value)}
    out: dict[str, str] = {}
    for key, inner in items:
        out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out


def numeric(record: dict) -> dict[str, float]:
    """A metrics.jsonl record's figures (the step is the x axis, not a figure)."""
    return {k: v for k, v in record.items() if type(v) in (int, float) and k != "step"}


class MLflowTracker:
    name = "mlflow"

    def __init__(self, run_name: str, params: dict[str, str], tags: dict[str, str], run_id: str | None):
        import mlflow

        self.mlflow = mlflow
        # MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID are read by mlflow itself.
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=tags)
        if not run_id:  # a resumed run keeps the parameters it was started with
            mlflow.log_params(params)
        self.run_id = self.run.info.run_id
        uri = mlflow.get_tracking_uri()
        self.url = (
            f"{uri.rstrip('/')}/#/experiments/{self.run.info.experiment_id}/runs/{self.run_id}"
            if uri.startswith(("http://", "https://"))
            else None
        )

    def log(self, record: dict) -> None:
        self.mlflow.log_metrics(numeric(record), step=int(record["step"]))

    def finish(self, tags: dict[str, str], status: str) -> None:
        self.mlflow.set_tags(tags)
        self.mlflow.end_run({fmt.FINISHED: "FINISHED", fmt.CANCELLED: "KILLED"}.get(status, "FAILED"))


class WandbTracker:
    name = "wandb"

    def __init__(self, run_name: str, params: dict[str, str], tags: dict[str, str], run_id: str | None, root):
        import wandb

        self.wandb = wandb
        # WANDB_PROJECT, WANDB_MODE (offline), WANDB_ENTITY, WANDB_API_KEY are read by wandb itself; the
        # run's files go into the job folder unless WANDB_DIR says otherwise.
        self.run = wandb.init(
            name=run_name,
            config=params,
            dir=os.environ.get("WANDB_DIR") or str(root),
            id=run_id,
            resume="allow" if run_id else None,
            reinit="create_new",
        )
        # Each metrics.jsonl record is one history row, plotted against the job's own step.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.run.summary.update(tags)  # W&B tags are short labels (64 characters); a path is not one
        self.run_id = self.run.id
        self.url = None if self.run.settings.mode == "offline" else self.run.url

    def log(self, record: dict) -> None:
        self.run.log({"step": int(record["step"]), **numeric(record)})

    def finish(self, tags: dict[str, str], status: str) -> None:
        self.run.summary.update(tags)
        self.run.finish(exit_code=0 if status == fmt.FINISHED else 1)


class SwanLabTracker:
    name = "swanlab"

    def __init__(self, run_name: str, params: dict[str, str], tags: dict[str, str], run_id: str | None, root):
        import swanlab

        self.swanlab = swanlab
        # SWANLAB_MODE (offline / local / cloud), SWANLAB_API_KEY … are read by swanlab; the project is
        # SWANLAB_PROJ_NAME, as in its own integrations; the files go into the job folder by default.
        self.run = swanlab.init(
            project=os.environ.get("SWANLAB_PROJ_NAME") or "tuneforge",
            name=run_name,
            config=params,
            log_dir=os.environ.get("SWANLAB_LOG_DIR") or str(Path(root) / "swanlog"),
            id=run_id,
            resume="allow" if run_id else None,
            reinit=True,
        )
        self.swanlab.config.update(tags)
        self.run_id = self.run.id
        try:
            self.url = self.run.url
        except ValueError:  # offline / local: no web address
            self.url = None

    def log(self, record: dict) -> None:
        self.swanlab.log(numeric(record), step=int(record["step"]))

    def finish(self, tags: dict[str, str], status: str) -> None:
        self.swanlab.config.update(tags)
        self.swanlab.finish(state={fmt.FINISHED: "success", fmt.CANCELLED: "aborted"}.get(status, "crashed"))


class Trackers:
    """The trackers a run reports to (none when ``report_to`` names only TensorBoard)."""

    def __init__(self, report_to: list[str], root: Path, run_name: str, spec: dict):
        require_trackers(report_to)
        self.root = Path(root).resolve()  # the paths a tracker shows must mean something elsewhere
        self.open: list = []
        tags = {"tuneforge.job": str(self.root), "tuneforge.method": str(spec.get("method"))}
        params = flatten(spec)
        try:
            self._start(report_to, run_name, params, tags)
        except Exception:
            self.finish(fmt.FAILED)  # the runs already started do not stay open
            raise

    def _start(self, report_to: list[str], run_name: str, params: dict, tags: dict) -> None:
        # A resumed run (same job folder) continues the tracker runs it started.
        earlier = {r["tool"]: r["run_id"] for r in fmt.tracker_runs(self.root)}
        for name in report_to:
            if name not in TRACKERS:
                continue  # tensorboard: always written into the job folder
            run_id = earlier.get(name)
            if name == "mlflow":
                tracker = MLflowTracker(run_name, params, tags, run_id)
            elif name == "wandb":
                tracker = WandbTracker(run_name, params, tags, run_id, self.root)
            else:
                tracker = SwanLabTracker(run_name, params, tags, run_id, self.root)
            self.open.append(tracker)
            fmt.append_event(self.root, fmt.TRACKER, tool=name, run_id=tracker.run_id, url=tracker.url)
            log.info("reporting to %s: run %s %s", name, tracker.run_id, tracker.url or "")

    def log(self, record: dict) -> None:
        for tracker in self.open:
            try:
                tracker.log(record)
            except Exception as exc:  # a tracker that goes away must not stop the training
                log.warning("%s: could not log step %s: %s", tracker.name, record.get("step"), exc)

    def finish(self, status: str) -> None:
        """The final model's path and lineage (``final/tuneforge.json``) as tags, then close each run."""
        tags = {"tuneforge.status": status}
        lineage = self.root / fmt.FINAL_DIR / "tuneforge.json"
        if status == fmt.FINISHED and lineage.is_file():
            tags["tuneforge.final_model"] = str(lineage.parent)
            tags.update(flatten(json.loads(lineage.read_text()), "tuneforge.lineage"))
        for tracker in self.open:
            try:
                tracker.finish(tags, status)
            except Exception as exc:
                log.warning("%s: could not close run %s: %s", tracker.name, tracker.run_id, exc)
        self.open = []
