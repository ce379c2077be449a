"""Several training processes placed by a Ray cluster: the same recipe inside Ray Train's TorchTrainer.

A run that asks for more than one process (``resources.workers``, ``gpus`` or ``nodes``) trains through
Ray Train when this process is a Ray program, that is when ``RAY_ADDRESS`` is set: Ray sets it for every
Ray job's entrypoint, so a job the ``ray`` executor submits takes this path with its spec unchanged, and
the same spec on a plain machine goes to torchrun (launch.py). One setting, Ray's own, and no key in the
spec that would make a spec run on one executor and not on the other.

Each Ray Train worker runs ``run_training`` as a torchrun rank would: Ray Train has set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the torch process group (gloo on CPU, NCCL on GPUs), HF Trainer
does DDP over it, and rank 0 writes the job folder (metrics, ``checkpoints/step-N``, ``final/``) as
always, so resume and register are unchanged. The job folder must be on storage every node mounts.
Each worker also writes its own log lines to ``logs/rank-N.txt`` (as the local launcher's ranks do):
Ray forwards a worker's output to the driver's log only as it gets to it, and a node's last lines can be
lost when the driver ends first (a cancel).

Failure handling is Ray Train's: ``FailureConfig(max_failures=resources.max_failures)`` restarts the
whole group when a worker is lost, and the restarted group resumes from the newest step-N this launch
saved (the folder's ``checkpoint_saved`` events after the launch). Ray keeps only its run state, under
``ray-train/``; the weights stay in ``checkpoints/``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from tuneforge.errors import Cancelled, ResourceError, TuneforgeError
from tuneforge.jobs import folder as fmt
from tuneforge.spec import JobSpec

log = logging.getLogger(__name__)


def wanted(spec: JobSpec, env: Mapping[str, str] | None = None) -> bool:
    """Whether this run goes through Ray Train: several processes, inside a Ray program, not a rank."""
    env = os.environ if env is None else env
    r = spec.resources
    return r.processes * r.nodes > 1 and bool(env.get("RAY_ADDRESS")) and "RANK" not in env


# What a Ray Train worker takes from its driver's environment (see train_worker).
WORKER_ENV = ("TUNEFORGE_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_WAIT_POLICY")


def run(spec: JobSpec, root: Path, callbacks, spec_written: bool, run_training) -> dict:
    """Train ``spec`` in the job folder ``root`` on a Ray Train worker group; the driver trains nothing.

    ``root`` is already checked (run.py): a folder that holds a run is only continued when asked.
    ``run_training`` is run.py's, handed in so that this module does not import its caller. Returns the
    metrics of the folder's ``finished`` event.
    """
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as exc:
        raise ResourceError(
            f"resources asks for {_world_size(spec)} processes inside a Ray job, which trains through Ray "
            "Train; Ray is not installed here. Install it with pip install 'tuneforge[ray]'."
        ) from exc

    r = spec.resources
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS says which cluster
    _stop_workers_on_sigterm(root)
    trainer = TorchTrainer(
        functools.partial(train_worker, run_training),
        train_loop_config={
            "spec": spec.model_dump(mode="json"),
            "root": str(root),
            "callbacks": list(callbacks),
            "spec_written": spec_written,
            "events_offset": _size(root / fmt.EVENTS_FILE),
            "env": {k: os.environ[k] for k in WORKER_ENV if k in os.environ},
        },
        scaling_config=ScalingConfig(num_workers=_world_size(spec), use_gpu=r.gpus > 0),
        run_config=RunConfig(
            name="run",
            storage_path=str(root / fmt.RAY_TRAIN_DIR),
            failure_config=FailureConfig(max_failures=r.max_failures),
        ),
    )
    log.info("Ray Train: %d workers, max_failures=%d, job folder %s", _world_size(spec), r.max_failures, root)
    try:
        trainer.fit()
    except Exception as exc:
        own = _worker_error(exc)
        if own is None:
            raise
        raise own from exc
    finally:
        (root / fmt.STOP_REQUEST).unlink(missing_ok=True)
    ending = fmt.ending(root) or {}
    if ending.get("event") == fmt.CANCELLED:  # stopped on request, after the workers' checkpoint
        raise _cancelled(ending, root)
    return dict(ending.get("metrics") or {})


def _stop_workers_on_sigterm(root: Path) -> None:
    """A stopped Ray job's driver gets SIGTERM (then SIGKILL after the job's stop grace); its workers are
    Ray's processes and get nothing. The driver writes the job folder's stop request, which each worker
    reads at its next step: they save a checkpoint, stop together and return, as a signalled local run
    does. Installed after ray.init, whose own handler exits at once."""
    import signal
    import threading

    request = root / fmt.STOP_REQUEST
    request.unlink(missing_ok=True)  # an earlier launch's: this one was not asked to stop
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        log.warning("received %s: asking the workers to save a checkpoint and stop", name)
        # Raised here, an error would surface wherever the driver was (inside Ray's fit): a folder gone or
        # a symlink put in the request's place only loses the checkpoint (Ray kills after the grace).
        try:
            fd = fmt.open_regular(request, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "w") as fh:
                fh.write(name)
        except OSError as exc:
            log.warning("could not write the stop request %s (%s): Ray stops the workers", request, exc)

    signal.signal(signal.SIGTERM, handler)


def _cancelled(ending: dict, root: Path) -> Cancelled:
    return Cancelled(
        f"stopped by {ending.get('reason') or 'request'}; checkpoint saved in {root / fmt.CHECKPOINTS_DIR}. "
        f"Resume with `tuneforge train {root / fmt.SPEC_FILE} --resume`."
    )


def train_worker(run_training, config: dict) -> None:
    """One Ray Train worker: the run as a torchrun rank would do it; after a restart, from the latest
    checkpoint this launch saved."""
    import ray.train

    from tuneforge.settings import get_settings

    # A worker on another node starts in that node's environment, not the driver's: the driver's home
    # (where the model, the data and the job folder are) and hub settings come with the config.
    os.environ.update(config.get("env", {}))
    get_settings.cache_clear()
    spec = JobSpec.model_validate(config["spec"])
    rank = ray.train.get_context().get_world_rank()
    _log_to_rank_file(Path(config["root"]), rank)
    restart_step = latest_saved_since(Path(config["root"]), config["events_offset"])
    if restart_step is not None:  # the group was restarted after a lost worker
        log.warning("rank %d: restarted by Ray Train; resuming from %s", rank, fmt.step_name(restart_step))
        spec = spec.model_copy(update={"resume_from": fmt.step_name(restart_step)})
    try:
        run_training(
            spec,
            config["root"],
            callbacks=tuple(config["callbacks"]),
            spec_written=config["spec_written"] or rank != 0 or restart_step is not None,
            folder_checked=True,
            stop_on_request=True,
        )
    except Cancelled:
        # Stopped on the driver's request, checkpoint saved (rank 0 wrote the event): a normal end for Ray
        # Train. Raised, it would count as a failure and Ray Train would start the group again.
        log.info("rank %d: stopped on request", rank)


def _log_to_rank_file(root: Path, rank: int) -> None:
    """This worker's log records also into the job folder's ``logs/rank-N.txt`` (appended: a restarted
    group's worker goes on in the same file)."""
    path = fmt.rank_log(root, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    root_logger = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in root_logger.handlers):
        return  # a worker process reused for a second launch: its lines would be written twice
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger.addHandler(handler)  # every library's records that reach the root
    ours = logging.getLogger("tuneforge")
    if ours.getEffectiveLevel() > logging.INFO:  # our progress lines are INFO
        ours.setLevel(logging.INFO)


def latest_saved_since(root: Path, offset: int) -> int | None:
    """The step of the newest checkpoint saved after byte ``offset`` of the events (this launch), if any.

    The job folder's own ``checkpoint_saved`` events, not Ray's checkpoint registry: Ray learns of a report
    at its next poll of the workers, and a worker lost between the report and the poll would take it along.
    """
    events, _ = fmt.read_jsonl(root / fmt.EVENTS_FILE, offset, limit=10**9)
    saved = [
        e["step"] for e in events if e.get("event") == fmt.CHECKPOINT_SAVED and isinstance(e.get("step"), int)
    ]
    present = {n for n, _ in fmt.step_checkpoints(root)}
    return next((n for n in reversed(saved) if n in present), None)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _world_size(spec: JobSpec) -> int:
    return spec.resources.processes * spec.resources.nodes


def _worker_error(exc: Exception) -> TuneforgeError | None:
    """A worker's own tuneforge error behind Ray's (a DataError stays a DataError for the exit code)."""
    failures = getattr(exc, "worker_failures", None) or {}
    for _, failure in sorted(failures.items()):
        cause = getattr(failure, "cause", failure)
        if isinstance(cause, TuneforgeError):
            return cause
    return None
