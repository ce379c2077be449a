"""How a worker's run ended, from its exit code and its job folder; what a restart of the control
plane does with a job the database says is running.

Pure decisions on files and processes: the control plane applies them to its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import folder as fmt
from .executor import Executor, Handle


@dataclass
class Outcome:
    state: str  # succeeded | failed | cancelled
    error: dict | None = None


def outcome(root: Path, exit_code: int | None, cancel_requested: bool) -> Outcome:
    """The end state of an attempt. ``exit_code`` is None when the worker was not our child."""
    end = fmt.ending(root)
    kind = end.get("event") if end else None
    if kind == fmt.FINISHED and exit_code in (0, None):
        return Outcome("succeeded")
    if cancel_requested or kind == fmt.CANCELLED:
        return Outcome("cancelled")
    if exit_code == 0 and kind is None:
        return Outcome("succeeded")  # a worker that reports no events (an evaluation) and exited 0
    if kind == fmt.FAILED:
        message = end.get("reason") or "the worker failed"
    elif exit_code is None:
        message = "the worker process ended without reporting how (it was not followed when it ended)"
    elif exit_code > 128:
        message = f"the worker was killed by signal {exit_code - 128}"
    else:
        message = f"the worker exited with code {exit_code}"
    tail = fmt.tail_lines(Path(root) / fmt.WORKER_LOG)
    return Outcome("failed", {"message": message, "exit_code": exit_code, "log_tail": tail})


def known_exit_code(root: Path, attempt: int | None, exit_code: int | None) -> int | None:
    """The executor's exit code, else the one a command job's runner recorded for this attempt.

    A worker followed across a restart of the control plane is not its child, so the executor cannot
    tell its code; a command job's runner writes it to the folder (spec jobs report through events).
    """
    if exit_code is not None or attempt is None:
        return exit_code
    return fmt.read_exit_code(root, attempt)


@dataclass
class Reconciled:
    adopted: bool
    outcome: Outcome | None = None
    reason: str = ""
    exit_code: int | None = None


def reconcile_running(
    executor: Executor,
    job_id: str,
    root: Path,
    handle: Handle | None,
    gpus: int,
    attempt: int | None = None,
) -> Reconciled:
    """A job left ``running`` by an earlier control plane: follow its worker again, or say how it ended."""
    if handle is not None and executor.adopt(job_id, handle, gpus):
        worker = f"worker pid {handle.pid}" if handle.pid else f"job {job_id} on the cluster"
        return Reconciled(True, reason=f"re-attached to {worker} after a restart")
    code = known_exit_code(root, attempt, None)
    result = outcome(root, code, False)
    return Reconciled(False, result, "its worker was gone when the control plane restarted", code)
