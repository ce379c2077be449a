"""What every route and background thread of one control plane shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.jobs.executor import Executor
from tuneforge.settings import Settings

from .db import Store


@dataclass
class Platform:
    settings: Settings
    store: Store
    executor: Executor
    max_upload_bytes: int
    background_validation_bytes: int = 8 << 20  # uploads above this validate after the response
    supervisor: object | None = None  # jobs.Supervisor; set by the app factory
    extras: dict = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.settings.root

    @property
    def jobs_dir(self) -> Path:
        return self.settings.jobs_dir

    def wake(self) -> None:
        if self.supervisor is not None:
            self.supervisor.wake()
