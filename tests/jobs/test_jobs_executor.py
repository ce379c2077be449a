"""The executor and supervisor without training: workers are tiny Python scripts that behave like one
(write events, exit with a code, ignore SIGTERM, …). Queue order, GPU slots, restart policy, reconcile."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuneforge.jobs import folder as fmt
from tuneforge.jobs.executor import (
    Handle,
    Launch,
    LocalExecutor,
    Status,
    process_start_ticks,
    visible_gpus_of,
)
from tuneforge.jobs.reconcile import outcome


def script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


EVENT = (
    "import json, time; "
    "open('events.jsonl', 'a').write(json.dumps({{'time': time.time(), 'event': '{0}'}}) + '\\n')"
)


def wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def written(path: Path) -> bool:
    """The worker's open(...).write(...) creates the file before it writes: wait for the content too."""
    return path.exists() and path.stat().st_size > 0


def test_gpu_slots_through_cuda_visible_devices(tmp_path):
    ex = LocalExecutor(max_concurrent=4, gpu_count=3)
    code = "import os; open('gpus','w').write(os.environ['CUDA_VISIBLE_DEVICES']); import time; time.sleep(1)"
    a = Launch("a", script(code), tmp_path / "a", gpus=2)
    b = Launch("b", script(code), tmp_path / "b", gpus=1)
    assert ex.can_start(2)
    ex.submit(a)
    assert not ex.can_start(2) and ex.can_start(1)
    ex.submit(b)
    assert not ex.can_start(1) and not ex.can_start(0)  # gpus=0 means one GPU when the machine has them
    wait(lambda: written(tmp_path / "a" / "gpus") and written(tmp_path / "b" / "gpus"))
    assert (tmp_path / "a" / "gpus").read_text() == "0,1"
    assert (tmp_path / "b" / "gpus").read_text() == "2"
    wait(lambda: ex.poll("a").running is False)
    assert ex.can_start(2)


def test_leases_for_serving_replicas_come_from_the_jobs_gpu_pool(tmp_path):
    ex = LocalExecutor(max_concurrent=4, gpu_count=2)
    assert ex.lease_gpus("deployment:d/0", 1) == [0]
    assert ex.lease_gpus("deployment:d/0", 1) == [0]  # the same holder asks again: the same GPU
    assert not ex.can_start(2) and ex.can_start(1)
    code = "import os; open('gpus','w').write(os.environ['CUDA_VISIBLE_DEVICES']); import time; time.sleep(5)"
    ex.submit(Launch("a", script(code), tmp_path / "a", gpus=1))
    wait(lambda: written(tmp_path / "a" / "gpus"))
    assert (tmp_path / "a" / "gpus").read_text() == "1"  # not the leased one
    assert ex.lease_gpus("deployment:d/1", 1) is None and not ex.can_start(0)  # all held
    ex.release_gpus("deployment:d/0")
    assert ex.lease_gpus("deployment:d/1", 1) == [0]
    # After a restart of the control plane: the GPU a running worker was given, read from its environment
    proc = subprocess.Popen(script("import time; time.sleep(10)"), env={"CUDA_VISIBLE_DEVICES": "1"})
    try:
        wait(lambda: visible_gpus_of(proc.pid) is not None)  # exec'd: its own environment
        fresh = LocalExecutor(max_concurrent=4, gpu_count=2)
        assert fresh.lease_gpus("deployment:d/1", 1, pid=proc.pid) == [1]
        assert fresh.lease_gpus("deployment:d/2", 1) == [0]
    finally:
        proc.kill()
        proc.wait()
    ex.cancel("a", grace_s=1)
    assert LocalExecutor(max_concurrent=4, gpu_count=0).lease_gpus("x", 1) == []  # no GPUs: nothing to hold


def scripted_platform(monkeypatch, max_concurrent: int, gpu_count: int):
    """A platform whose jobs run ``row.spec['script']`` instead of `tuneforge train`."""
    from tuneforge.platform import supervisor as service
    from tuneforge.platform.app import build_platform

    def launch_for(ctx, row):
        root = Path(row.folder)
        return Launch(row.id, script(row.spec["script"]), root, {}, root, row.gpus, row.attempt + 1)

    monkeypatch.setattr(service, "launch_for", launch_for)
    platform, _ = build_platform(executor=LocalExecutor(max_concurrent=max_concurrent, gpu_count=gpu_count))
    return platform


def test_a_job_waits_in_the_queue_while_deployments_hold_every_gpu(monkeypatch):

    platform = scripted_platform(monkeypatch, max_concurrent=2, gpu_count=2)
    try:
        for i in range(2):
            platform.executor.lease_gpus(f"deployment:d/{i}", 1)
        job = _job(platform, "import os; open('gpus','w').write(os.environ['CUDA_VISIBLE_DEVICES'])", gpus=1)
        for _ in range(3):
            platform.supervisor.tick()
        assert _row(platform, job.id).state == "queued"
        platform.executor.release_gpus("deployment:d/1")
        _run_until_idle(platform)
        assert _row(platform, job.id).state == "succeeded"
        assert (Path(_row(platform, job.id).folder) / "gpus").read_text() == "1"
    finally:
        platform.store.dispose()


def test_stop_ends_a_service_on_its_leased_gpu_and_gives_the_gpu_back(tmp_path):
    ex = LocalExecutor(max_concurrent=1, gpu_count=2)
    assert ex.lease_gpus("deployment:d/0", 1) == [0]
    code = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open('gpus.tmp','w').write(os.environ['CUDA_VISIBLE_DEVICES']); os.rename('gpus.tmp', 'gpus'); "
        "time.sleep(60)"
    )
    ex.submit(Launch("deployment:d/0", script(code), tmp_path / "d", gpus=1, service=True))
    wait(lambda: (tmp_path / "d" / "gpus").exists())
    assert (tmp_path / "d" / "gpus").read_text() == "0"  # the GPU leased for it before its launch
    assert ex.can_start(1) and not ex.can_start(2)  # a service holds its GPU but no job slot
    assert ex.stop("deployment:d/0", grace_s=0.5) == Status(False, 128 + 9)  # SIGTERM ignored: SIGKILL
    assert ex.poll("deployment:d/0") is None and ex.can_start(2)  # forgotten, its GPU back in the pool
    assert ex.stop("deployment:d/0") is None  # stopping what is gone is a no-op


def test_exit_codes_signals_and_cancel_escalates_to_sigkill(tmp_path):
    ex = LocalExecutor(max_concurrent=4, gpu_count=0)
    ex.submit(Launch("ok", script("print('hi')"), tmp_path / "ok"))
    ex.submit(Launch("bad", script("import sys; sys.exit(3)"), tmp_path / "bad"))
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    ex.submit(Launch("stubborn", script(stubborn), tmp_path / "stubborn"))
    wait(lambda: b"ready" in (tmp_path / "stubborn" / fmt.WORKER_LOG).read_bytes())
    ex.cancel("stubborn", grace_s=0.5)
    final = {}

    def ended(job):
        status = ex.poll(job)
        if status is not None and not status.running:
            final[job] = status
        return job in final

    for job in ("ok", "bad", "stubborn"):
        wait(lambda job=job: ended(job))
    assert {j: s.exit_code for j, s in final.items()} == {"ok": 0, "bad": 3, "stubborn": 128 + 9}
    assert "hi" in (tmp_path / "ok" / fmt.WORKER_LOG).read_text()
    assert all(ex.poll(j) is None for j in final)  # reaped and forgotten after reporting once
    assert ex.can_start(0)


def test_adopt_follows_a_process_started_elsewhere_and_refuses_a_recycled_pid(tmp_path):
    proc = subprocess.Popen(script("import time; time.sleep(1.5)"), start_new_session=True)
    ex = LocalExecutor(max_concurrent=1, gpu_count=0)
    ticks = process_start_ticks(proc.pid)
    assert not ex.adopt("other", Handle(proc.pid, ticks + 1))  # same pid, another process
    assert ex.adopt("j", Handle(proc.pid, ticks))
    assert ex.poll("j").running and not ex.can_start(0)
    proc.wait()
    status = ex.poll("j")
    assert status.running is False and status.exit_code is None


def test_outcome_reads_the_folder(tmp_path):
    fmt.append_event(tmp_path, fmt.LAUNCHED)
    fmt.append_event(tmp_path, fmt.STARTED)
    (tmp_path / fmt.WORKER_LOG).write_text("line 1\nTraceback: boom\n")
    lost = outcome(tmp_path, None, False)
    assert lost.state == "failed" and "ended without reporting" in lost.error["message"]
    assert lost.error["log_tail"].endswith("Traceback: boom")
    fmt.append_event(tmp_path, fmt.FAILED, reason="ValueError: x")
    assert outcome(tmp_path, 1, False).error["message"] == "ValueError: x"
    fmt.append_event(tmp_path, fmt.LAUNCHED)  # a new attempt: the old ending no longer counts
    fmt.append_event(tmp_path, fmt.STARTED)
    fmt.append_event(tmp_path, fmt.FINISHED)
    assert outcome(tmp_path, None, False).state == "succeeded"
    assert outcome(tmp_path, 137, False).state == "failed"
    assert outcome(tmp_path, 143, True).state == "cancelled"


# -- the supervisor with scripted workers ------------------------------------------------------------------


@pytest.fixture
def ctx(monkeypatch):
    platform = scripted_platform(monkeypatch, max_concurrent=1, gpu_count=0)
    yield platform
    platform.store.dispose()


def _job(ctx, code: str, **kw):
    from tuneforge.platform.jobs import create_job

    return create_job(ctx, {"script": code}, kind="scripted", **kw)


def _row(ctx, job_id):
    from tuneforge.platform.db import Job

    with ctx.store.session() as s:
        return s.get(Job, job_id)


def _run_until_idle(ctx, timeout=30.0):
    from sqlalchemy import select

    from tuneforge.platform.db import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ctx.supervisor.tick()
        with ctx.store.session() as s:
            if not list(s.scalars(select(Job).where(Job.state.in_(("queued", "running"))))):
                return
        time.sleep(0.05)
    raise AssertionError("jobs still active")


def test_queue_runs_by_priority_then_age(ctx):
    order = "import os; open('../order.txt', 'a').write(os.path.basename(os.getcwd()) + ' ')"
    low = _job(ctx, order, priority=0)
    high_old = _job(ctx, order, priority=5)
    high_new = _job(ctx, order, priority=5)
    _run_until_idle(ctx)
    ran = (ctx.jobs_dir / "order.txt").read_text().split()
    assert ran == [high_old.id, high_new.id, low.id]
    assert all(_row(ctx, j.id).state == "succeeded" for j in (low, high_old, high_new))


def test_on_failure_restarts_until_max_retries_then_fails(ctx):
    code = EVENT.format("started") + "; import sys; print('boom', flush=True); sys.exit(2)"
    job = _job(ctx, code, restart_policy="on-failure", max_retries=2)
    _run_until_idle(ctx)
    row = _row(ctx, job.id)
    assert row.state == "failed" and row.attempt == 3 and row.exit_code == 2
    assert "exited with code 2" in row.error["message"] and "boom" in row.error["log_tail"]
    events = fmt.read_all_jsonl(Path(row.folder) / fmt.EVENTS_FILE)
    assert [e["attempt"] for e in events if e["event"] == "restarting"] == [2, 3]
    flaky = _job(
        ctx,
        "import os, sys; sys.exit(0 if os.path.exists('x') else (open('x','w') and 1))",
        restart_policy="on-failure",
        max_retries=1,
    )
    _run_until_idle(ctx)
    assert _row(ctx, flaky.id).state == "succeeded" and _row(ctx, flaky.id).attempt == 2


def test_reconcile_a_running_job_whose_worker_is_gone(ctx):
    from tuneforge.platform.db import Job

    gone = subprocess.Popen(script("pass"))
    gone.wait()
    finished = _job(ctx, "pass")
    lost = _job(ctx, "pass", restart_policy="never")
    requeue = _job(ctx, "pass", restart_policy="on-failure", max_retries=1)
    for j in (finished, lost, requeue):
        with ctx.store.session() as s:
            r = s.get(Job, j.id)
            r.state, r.attempt, r.pid, r.pid_ticks = "running", 1, gone.pid, 1
        fmt.append_event(Path(j.folder), fmt.LAUNCHED)
        fmt.append_event(Path(j.folder), fmt.STARTED)
    fmt.append_event(Path(finished.folder), fmt.FINISHED)
    ctx.supervisor.reconcile()
    assert _row(ctx, finished.id).state == "succeeded"
    assert _row(ctx, lost.id).state == "failed"
    assert "ended without reporting" in _row(ctx, lost.id).error["message"]
    assert _row(ctx, requeue.id).state == "queued" and _row(ctx, requeue.id).resume_from == "latest"
    for j in (finished, lost, requeue):
        events = fmt.read_all_jsonl(Path(j.folder) / fmt.EVENTS_FILE)
        why = [e for e in events if e["event"] == "reconciled"]
        assert len(why) == 1 and why[0]["adopted"] is False and "gone" in why[0]["reason"]
