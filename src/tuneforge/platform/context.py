"""What every route and background thread of one control plane shares: one typed object, built by
``app.build_platform``.

The parts that hold this context themselves (the job supervisor, the deployments' supervisor, the
pulls) are imported for type checkers only: they import this module, and imports point one way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.jobs.executor import Executor
from tuneforge.settings import Settings

from .answer_cache import AnswerCache
from .db import Store

if TYPE_CHECKING:
    import httpx

    from .exports import Exports
    from .metrics import RequestMetrics
    from .pulls import Pulls
    from .replicas import DeploymentSupervisor
    from .supervisor import Supervisor

MAX_PULLS = 2  # each pull's worker holds a model in memory while it converts
MAX_TOKEN_REPORTS = 2  # token-report workers at once (a tokenizer of ~260 MB each)
MAX_EXPORTS = 1  # each export worker holds a model (and its merged copy) in memory


@dataclass
class Platform:
    settings: Settings
    store: Store
    executor: Executor
    max_upload_bytes: int
    background_validation_bytes: int = 8 << 20  # uploads above this validate after the response
    token_stats: bool = True  # an upload's token statistics, by a worker (API tests turn them off)
    cancel_grace_s: float = 30.0  # a cancelled job's SIGTERM, then SIGKILL this much later
    max_pulls: int = MAX_PULLS  # model pulls and imports running at once; more are refused (503)
    # token-report workers at once (``catalog.token_report_in_background`` waits for a slot)
    token_report_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_TOKEN_REPORTS), repr=False
    )
    max_exports: int = MAX_EXPORTS  # model exports running at once; more are refused (503)
    admin_token_created: str | None = None  # the admin token made on this start, to print once
    # each job's encoded answer per version of its row (job_answers): the list and get reads
    answers: AnswerCache = field(default_factory=AnswerCache, repr=False)
    # Built by the app factory right after this object (each holds it): set before any route runs.
    supervisor: Supervisor = field(init=False, repr=False)
    deployments: DeploymentSupervisor = field(init=False, repr=False)
    pulls: Pulls = field(init=False, repr=False)
    exports: Exports = field(init=False, repr=False)
    metrics: RequestMetrics | None = field(default=None, repr=False)  # the HTTP app's request metrics
    gateway_client: httpx.AsyncClient | None = field(default=None, repr=False)  # the gateway's, made lazily

    @property
    def home(self) -> Path:
        return self.settings.root

    @property
    def jobs_dir(self) -> Path:
        return self.settings.jobs_dir

    def wake(self) -> None:
        self.supervisor.wake()
