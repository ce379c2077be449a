"""What every recipe is handed: the spec, its checked data and machine, and the job folder to report in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneforge.spec import JobSpec

from .model import Runtime
from .reporting import JobFolder, Reporter, StopFlag
from .tracking import Trackers


@dataclass
class RunContext:
    spec: JobSpec
    folder: JobFolder
    runtime: Runtime
    train_records: list[dict]
    val_records: list[dict]
    stop: StopFlag
    resume: Path | None = None  # checkpoint to continue from
    callbacks: tuple = ()  # extra TrainerCallbacks (tests, the platform)
    show_bar: bool = False
    trackers: Trackers | None = None  # train.report_to's MLflow / W&B / SwanLab runs (main process only)

    def reporter(self) -> Reporter:
        return Reporter(
            self.folder,
            self.stop,
            self.spec.train.save_total_limit,
            self.show_bar,
            self.trackers,
            select=self.spec.train.select,
        )
