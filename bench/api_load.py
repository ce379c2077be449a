"""Control-plane load: latency of `GET /api/v1/jobs` (the first page, a `?state=` page, pages walked by
cursor) and of `GET /api/v1/jobs/{id}` with 10,000 jobs in the database and 50 clients, and of job
creation, on SQLite and (when a URL is given) PostgreSQL; and the time from `jobs create` to the
worker's first training step against `tuneforge train` run directly (target: under 1.2x + 1 s).

    python bench/api_load.py [--jobs 10000] [--clients 50] [--seconds 10] [--postgres URL] [--start-runs 3]

The server is the real app on uvicorn on 127.0.0.1 in this process; the clients are httpx threads in a
process of their own (in the server's process their own Python time would queue behind the server's for
the one interpreter lock, and count as the server's). Each client sends its next request when its last
one is answered (closed loop). Target (issue 20): p99 <= 200 ms for list and get at 10,000 jobs and 50
clients. The CPU model, the load average and the database are printed beside the figures, and for the
reads the server's CPU time per request (`server_cpu_ms`: this process's CPU time over the load, which
other work on the machine does not inflate the way it inflates latency; with one server process p99 is
about clients x server_cpu_ms / the cores it gets; `client_cpu_ms` is the clients' process's CPU time per
request, taken from the same cores). The rows are what real ones hold (whole resolved
specs, metrics, failed jobs' log tails), since a list answers them whole; after the reads, how many job
answers came from the server's answer cache (platform/job_answers.py) and the memory it held.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

# The repository root: the helpers are tests.support.*, the fixtures tests.conftest.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dedup_check import cpu_model  # noqa: E402
from tuneforge.jobs.ranks import free_port  # noqa: E402

os.environ.setdefault("TQDM_DISABLE", "1")
MEMO = [
    {"instruction": "Say the code word.", "input": "", "output": "banana seven"},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris"},
]


class Running:
    """The app on uvicorn in a thread, with its own TUNEFORGE_HOME (and database URL)."""

    def __init__(self, home: Path, database_url: str | None, supervise: bool = False):
        import uvicorn

        os.environ["TUNEFORGE_HOME"] = str(home)
        if database_url:
            os.environ["TUNEFORGE_DATABASE_URL"] = database_url
        else:
            os.environ.pop("TUNEFORGE_DATABASE_URL", None)
        from tuneforge.platform.app import create_app
        from tuneforge.settings import get_settings

        get_settings.cache_clear()
        self.app = create_app(supervise=supervise)
        self.ctx = self.app.state.platform
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = (home / "admin.token").read_text().strip()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _log_tail() -> str:
    """What a failed job's ``error.log_tail`` holds: the last 40 lines of its log (a traceback)."""
    frames = [f'  File "/srv/tuneforge/train/sft.py", line {100 + i}, in step\n    loss = model(**batch).loss'
              for i in range(18)]  # fmt: skip
    return "\n".join(["Traceback (most recent call last):", *frames, "RuntimeError: CUDA out of memory"])


def fill_jobs(ctx, n: int) -> list[str]:
    """``n`` jobs inserted in one statement (not through the API); their ids. Each row is what a real one
    holds, which is what a list answers: the resolved JobSpec of ``sft-lora`` (about 1.5 KB of JSON, 90
    keys), a few metrics, and for the failed third an error with a 40-line log tail."""
    from tests.support.platformhelp import job_row
    from tuneforge.platform.db import Job
    from tuneforge.spec import JobSpec, expand_template

    spec = expand_template({"template": "sft-lora", "model": "tiny", "data": {"train": "ds-x"}})
    spec = JobSpec.model_validate(spec).model_dump(mode="json")
    error = {"message": "the worker exited with code 1", "exit_code": 1, "log_tail": _log_tail()}
    now = time.time()
    rows = [
        job_row(
            f"job-{secrets.token_hex(6)}",
            state=("succeeded", "failed", "queued")[i % 3],
            spec=spec,
            attempt=1,
            step=i % 100,
            max_steps=100,
            latest_metrics={"loss": 1.0 + i % 7 / 10, "learning_rate": 1e-4, "epoch": 0.5, "grad_norm": 0.9},
            exit_code=1 if i % 3 == 1 else None,
            error=error if i % 3 == 1 else None,
            created_at=now - n + i,
        )
        for i in range(n)
    ]
    with ctx.store.session() as s:
        s.execute(Job.__table__.insert(), rows)
    return [r["id"] for r in rows]


def _client_load(url: str, token: str, clients: int, seconds: float, what: str, ids: list, out) -> None:
    """In the clients' process: ``clients`` threads, each sending ``what`` requests back to back."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {token}"}

    def request(c: httpx.Client, i: int, n: int, cursor: list) -> httpx.Response:
        if what == "get":
            return c.get(f"/api/v1/jobs/{ids[(i * 7919 + n) % len(ids)]}")
        if what == "list_state":
            return c.get("/api/v1/jobs", params={"state": "failed"})
        if what == "list_walk":  # page after page by cursor, from the first again after the last
            r = c.get("/api/v1/jobs", params={"before": cursor[0]} if cursor[0] else {})
            cursor[0] = r.json().get("next") if r.status_code == 200 else None
            return r
        return c.get("/api/v1/jobs")

    # Clients are made and connected before the clock starts: 50 httpx clients cost seconds on a busy
    # machine (an SSL context each), time the threads started first would otherwise have to themselves.
    conns = [httpx.Client(base_url=url, headers=headers, timeout=120) for _ in range(clients)]
    for c in conns:
        c.get("/healthz")
    out.put("ready")  # the server's CPU clock starts now (``load``)
    cpu = time.process_time()  # and the clients' own: on the same cores, what they take the server lacks
    go = threading.Barrier(clients + 1)
    stop = [0.0]

    def worker(i: int) -> None:
        mine, cursor, n, c = [], [None], 0, conns[i]
        go.wait()
        while time.monotonic() < stop[0]:
            t = time.perf_counter()
            r = request(c, i, n, cursor)
            mine.append(time.perf_counter() - t)
            n += 1
            if r.status_code >= 400:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    started = time.monotonic()
    stop[0] = started + seconds
    go.wait()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    lat = sorted(latencies)
    out.put(
        {
            "client_cpu_ms": round(cpu * 1000 / max(1, len(lat)), 2),
            "requests": len(lat),
            "errors": errors[0],
            "rps": round(len(lat) / elapsed, 1),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
        }
    )


def load(run: Running, clients: int, seconds: float, what: str, ids: list | None = None) -> dict:
    """``what`` (list, list_state, list_walk, get) from a process of clients of its own (spawned, so it
    shares nothing with the server's threads)."""
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    proc = mp.Process(target=_client_load, args=(run.url, run.token, clients, seconds, what, ids or [], out))
    proc.start()
    if out.get(timeout=600) != "ready":
        raise RuntimeError("the clients' process did not start")
    # The server's CPU time: this process runs nothing else while it waits for the clients' answer.
    cpu = time.process_time()
    result = out.get(timeout=seconds + 600)
    result["server_cpu_ms"] = round((time.process_time() - cpu) * 1000 / max(1, result["requests"]), 2)
    proc.join()
    return result


def create_load(run: Running, clients: int, seconds: float, body: dict) -> dict:
    """Job creation from threads in this process (it writes job folders; one figure, not the target)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker():
        with run.client() as c:
            mine = []
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = c.post("/api/v1/jobs", json=body)
                mine.append(time.perf_counter() - t)
                if r.status_code >= 400:
                    errors[0] += 1
            with lock:
                latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "errors": errors[0],
        "rps": round(len(lat) / (time.monotonic() - started), 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
    }


def api_load(database_url: str | None, args) -> dict:
    from tests.support.platformhelp import fake_model

    with tempfile.TemporaryDirectory() as home:
        run = Running(Path(home), database_url)
        try:
            fake_model()
            with run.client() as c:
                c.post("/api/v1/datasets", json={"name": "memo", "records": MEMO}).raise_for_status()
            ids = fill_jobs(run.ctx, args.jobs)
            engine = run.ctx.store.engine
            with engine.connect():  # the dialect learns the server's version on the first connection
                version = ".".join(map(str, engine.dialect.server_version_info or ()))
            print(f"database: {engine.dialect.name} {version}", flush=True)
            result = {
                f"{what}": load(run, args.clients, args.seconds, what, ids)
                for what in ("list", "list_state", "list_walk", "get")
            }
            cache = run.ctx.answers  # each job's answer, encoded once per version of its row
            print(
                f"answer_cache {engine.dialect.name}: hits={cache.hits} misses={cache.misses} "
                f"jobs_kept={len(cache)} mib={cache.bytes / 2**20:.1f} of {cache.max_bytes / 2**20:.0f}",
                flush=True,
            )
            if not args.skip_create:
                body = {"template": "sft-lora", "model": "tiny", "datasets": ["memo"]}
                result["create"] = create_load(run, min(args.clients, 8), args.seconds, body)
        finally:
            run.stop()
    return result


def first_step_seconds(folder: Path, start: float, timeout: float = 300) -> float:
    metrics = folder / "metrics.jsonl"
    while time.monotonic() - start < timeout:
        if metrics.exists() and metrics.stat().st_size > 0:
            return time.monotonic() - start
        time.sleep(0.02)
    raise RuntimeError(f"no first step in {folder}")


def start_latency(args) -> dict:
    from tests.conftest import make_tiny_model

    direct, served = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_model(tmp / "tiny-src")
        data = tmp / "memo.json"
        data.write_text(json.dumps(MEMO * 8))
        spec = {
            "model": str(model),
            "data": {"train": str(data), "max_len": 64},
            "train": {"max_steps": 3, "logging_steps": 1, "save_steps": 1000},
        }
        spec_path = tmp / "spec.yaml"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "TUNEFORGE_HOME": str(tmp / "direct-home")}
        for i in range(args.start_runs):
            out = tmp / f"direct-{i}"
            start = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tuneforge.cli.main", "train", str(spec_path), "-o", str(out)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            direct.append(first_step_seconds(out, start))
            proc.wait()
        run = Running(tmp / "server-home", None, supervise=True)
        try:
            from tuneforge.models.pull import import_model

            import_model(str(model), "tiny", lambda *a: None)
            with run.client() as c:
                c.post("/api/v1/datasets", json={"name": "memo", "records": MEMO * 8}).raise_for_status()
                for _ in range(args.start_runs):
                    body = {
                        "template": "sft-lora",
                        "model": "tiny",
                        "datasets": ["memo"],
                        "overrides": {"data.max_len": 64, "train.max_steps": 3, "train.logging_steps": 1},
                    }
                    start = time.monotonic()
                    job = c.post("/api/v1/jobs", json=body).json()
                    served.append(first_step_seconds(Path(run.ctx.jobs_dir) / job["id"], start))
                    while c.get(f"/api/v1/jobs/{job['id']}").json()["state"] not in ("succeeded", "failed"):
                        time.sleep(0.2)
        finally:
            run.stop()
    d, s = statistics.median(direct), statistics.median(served)
    return {
        "direct_s": round(d, 2),
        "server_s": round(s, 2),
        "ratio": round(s / d, 3),
        "target_s": round(1.2 * d + 1, 2),
        "meets_target": s <= 1.2 * d + 1,
    }


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--postgres", default=os.environ.get("TUNEFORGE_TEST_POSTGRES_URL"))
    p.add_argument("--start-runs", type=int, default=3)
    p.add_argument("--skip-start", action="store_true")
    p.add_argument("--skip-create", action="store_true", help="Only the reads (list and get).")
    args = p.parse_args()
    backends = {"sqlite": None}
    if args.postgres:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"tf_bench_{secrets.token_hex(4)}"
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        backends["postgresql"] = (
            make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        )
    print(f"machine: {cpu_model()} ({os.cpu_count()} cores), load average {_load()} at the start", flush=True)
    try:
        for label, url in backends.items():
            result = api_load(url, args)
            for what, r in result.items():
                clients = min(args.clients, 8) if what == "create" else args.clients
                print(
                    f"{what:<10} {label:<10} jobs_in_db={args.jobs} clients={clients} "
                    f"rps={r['rps']} p50_ms={r['p50_ms']} p99_ms={r['p99_ms']} "
                    f"server_cpu_ms={r.get('server_cpu_ms', '-')} "
                    f"client_cpu_ms={r.get('client_cpu_ms', '-')} errors={r['errors']}",
                    flush=True,
                )
    finally:
        if args.postgres:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"load average {_load()} at the end of the reads", flush=True)
    if not args.skip_start:
        r = start_latency(args)
        print(
            f"first_step direct_s={r['direct_s']} server_s={r['server_s']} ratio={r['ratio']} "
            f"target_s={r['target_s']} meets_target={r['meets_target']} (medians of {args.start_runs})"
        )


if __name__ == "__main__":
    main()
