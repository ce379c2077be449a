"""The Ray executor on a real two-node Ray cluster on 127.0.0.1 (tests/support/raycluster.py), token
authentication on: jobs, logs, cancel, a control-plane restart and a serving replica go through Ray's job
API with nothing else changed for the API's user; a submission without the token is refused.

One cluster and one control plane (its home, database and store) for the module: starting Ray takes most
of this file's time. The restart test replaces the control plane and runs last but one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import MEMO, make_serving_model
from tests.support.platformhelp import store_model, upload, wait_for, wait_state

pytest.importorskip("ray.job_submission", reason="the Ray executor's tests need the `ray` extra")

FAST = {"data.max_len": 64, "lora.dropout": 0.0, "train.logging_steps": 1, "train.max_steps": 2}


@pytest.fixture(scope="module")
def cluster():
    from tests.support.raycluster import RayTestCluster

    t0 = time.monotonic()
    c = RayTestCluster().start()
    print(f"Ray cluster up in {time.monotonic() - t0:.1f}s (start {c.attempts})")
    yield c
    rss = c.memory_mb()
    print("Ray RSS by process (MiB):", rss, "total", sum(rss.values()), "PSS total", c.pss >> 20)
    c.stop()


class Plane:
    """The control plane under test: an app on the Ray executor, restartable on the same home."""

    def __init__(self, cluster, home):
        self.cluster, self.home, self.client = cluster, home, None

    def start(self, executor=None) -> TestClient:
        from tuneforge.platform.app import create_app
        from tuneforge.settings import Settings

        settings = Settings(home=self.home, executor="ray", ray_address=self.cluster.address)
        self.client = TestClient(create_app(settings, executor=executor)).__enter__()
        token = (self.home / "admin.token").read_text().strip()
        self.client.headers["Authorization"] = f"Bearer {token}"
        return self.client

    def stop(self) -> None:
        self.client.__exit__(None, None, None)

    @property
    def executor(self):
        return self.client.app.state.platform.executor


@pytest.fixture(scope="module")
def plane(cluster, tmp_path_factory, tiny_models):
    from tuneforge.settings import get_settings

    home = tmp_path_factory.mktemp("rayhome")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_HOME", str(home))
        mp.setenv("RAY_AUTH_TOKEN", cluster.token)  # the control plane's token, as a user sets it
        get_settings.cache_clear()
        p = Plane(cluster, home)
        t0 = time.monotonic()
        client = p.start()  # the security and storage checks run here
        print(f"control plane on Ray up in {time.monotonic() - t0:.1f}s")
        store_model(tiny_models["llama"], "tiny")
        store_model(make_serving_model(home / "src-chat"), "tiny-chat")
        assert upload(client, "memo.json", json.dumps(MEMO), name="memo").status_code == 201
        yield p
        p.stop()
    get_settings.cache_clear()


@pytest.fixture
def api(plane, monkeypatch):
    """The module's control plane; this test's settings point at its home."""
    from tuneforge.settings import get_settings

    monkeypatch.setenv("TUNEFORGE_HOME", str(plane.home))
    monkeypatch.setenv("RAY_AUTH_TOKEN", plane.cluster.token)
    get_settings.cache_clear()
    return plane.client


def _log(api, job_id) -> str:
    return api.get(f"/api/v1/jobs/{job_id}/logs").text


def _command(api, script: str) -> dict:
    body = {"kind": "command", "name": "r", "command": ["python", "-c", script]}
    r = api.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_training_job_runs_on_ray_and_finishes(api, plane):
    job = api.post(
        "/api/v1/jobs",
        json={"template": "sft-lora", "model": "tiny", "datasets": ["memo"], "overrides": FAST},
    ).json()
    done = wait_state(api, job["id"], ("succeeded", "failed"), timeout=180)
    assert done["state"] == "succeeded", _log(api, job["id"])
    info = plane.executor.client.get_job_info(job["id"])  # submission id = job id
    assert info.status.value == "SUCCEEDED" and "tuneforge.cli.main train" in info.entrypoint
    assert info.driver_exit_code == 0 and done["exit_code"] == 0
    log = _log(api, job["id"])
    assert "--- attempt 1 at" in log and f"(Ray job {job['id']})" in log and "loss=" in log
    assert done["progress"] == {"step": 2, "max_steps": 2}
    print("the job's log on Ray begins:\n" + "\n".join(log.splitlines()[:3]))


def _train_worker_on_second_node(cluster):
    """The Ray Train worker process on the cluster's second node (its raylet's node-manager port)."""
    import psutil

    port = str(cluster._node_ports[6])  # node 1's --node-manager-port (tests/support/raycluster.py)
    for p in cluster.processes():
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()) and port in " ".join(p.parent().cmdline()):
                return p
        except psutil.Error:
            continue
    return None


def test_a_two_worker_job_on_both_nodes_survives_a_lost_worker_and_cancels_with_a_checkpoint(api, plane):
    """resources.workers=2 on the two 1-CPU nodes: the entrypoint drives a Ray Train group and reserves
    nothing itself (reserving its CPU would leave one for two workers, and the job would wait for ever).
    The worker on the second node is SIGKILLed once a checkpoint exists (as when its node goes away):
    with max_failures=1 Ray Train restarts the group from that checkpoint. Then a cancel: Ray sends
    SIGTERM to the driver only; its request file makes both workers save a checkpoint at the step they
    are at and stop together (they used to be killed without one)."""
    import signal

    from tuneforge.jobs import folder as fmt

    overrides = {**FAST, "resources.workers": 2, "resources.max_failures": 1, "train.max_steps": 400,
                 "train.save_steps": 4}  # fmt: skip
    body = {"template": "sft-lora", "model": "tiny", "datasets": ["memo"], "overrides": overrides}
    job = api.post("/api/v1/jobs", json=body).json()
    folder = plane.home / "jobs" / job["id"]

    def events() -> list[dict]:
        return fmt.read_all_jsonl(folder / fmt.EVENTS_FILE)

    wait_for(lambda: fmt.step_checkpoints(folder), 240, "a first checkpoint")
    worker = _train_worker_on_second_node(plane.cluster)
    assert worker is not None, [" ".join(p.cmdline())[:80] for p in plane.cluster.processes()]
    worker.send_signal(signal.SIGKILL)

    def training_again():  # the restarted group has saved a checkpoint of its own
        started = [i for i, e in enumerate(events()) if e["event"] == fmt.STARTED]
        later = events()[started[-1] :] if len(started) == 2 else []
        return any(e["event"] == fmt.CHECKPOINT_SAVED for e in later)

    wait_for(training_again, 300, "the restarted group's first checkpoint")
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    done = wait_state(api, job["id"], ("cancelled", "succeeded", "failed"), timeout=120)
    assert done["state"] == "cancelled", _log(api, job["id"])
    story = [{k: e[k] for k in ("event", "resumed_from", "step", "reason") if k in e} for e in events()]
    print(
        "events:", *[e for e in story if e["event"] not in ("data_ready", "training", "epoch_done")], sep="\n"
    )
    resumed = [e["resumed_from"] for e in story if e["event"] == fmt.STARTED]
    assert len(resumed) == 2 and resumed[0] is None and resumed[1].startswith("step-"), resumed
    log = _log(api, job["id"])
    assert "world_size=2" in log  # Ray Train's group of two
    # each rank's own log (the driver's gets a node's last lines only if it outlives them): equal weights
    ranks = [api.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": r}).text for r in (0, 1)]
    digests = [
        re.findall(rf"rank {r} of 2: trainable weights sha256 (\w+)", text) for r, text in enumerate(ranks)
    ]
    assert all(len(d) == 1 for d in digests) and digests[0] == digests[1], (digests, ranks[1][-2000:])
    assert "restarted by Ray Train; resuming from step-" in ranks[1]  # the second launch, same file
    [stopped] = [e for e in story if e["event"] == fmt.CANCELLED]
    assert stopped["step"] < 400 and (folder / fmt.CHECKPOINTS_DIR / fmt.step_name(stopped["step"])).is_dir()
    assert not (folder / fmt.STOP_REQUEST).exists()


def test_a_command_job_logs_while_running_and_cancel_stops_it_on_ray(api, plane):
    script = (
        "import os, time; print('token leaked:', 'RAY_AUTH_TOKEN' in os.environ, flush=True); time.sleep(120)"
    )
    job = _command(api, script)
    # Its output reaches the job's log API while it runs on Ray.
    wait_for(lambda: "token leaked:" in _log(api, job["id"]), 90, "the command's first line")
    assert api.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "running"
    assert "token leaked: False" in _log(api, job["id"])  # the node's Ray token is not the script's
    assert plane.executor.client.get_job_status(job["id"]).value == "RUNNING"
    t0 = time.monotonic()
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    assert wait_state(api, job["id"], ("cancelled", "failed", "succeeded"), 60)["state"] == "cancelled"
    assert plane.executor.client.get_job_status(job["id"]).value == "STOPPED"
    assert time.monotonic() - t0 < 30


def test_a_replica_placed_through_ray_answers_through_the_gateway(api, plane):
    r = api.post("/api/v1/deployments", json={"model": "tiny-chat", "name": "raydep"})
    assert r.status_code == 201, r.text

    def ready():
        d = api.get("/api/v1/deployments/raydep").json()
        assert d["state"] != "failed", d
        return d["state"] == "ready"

    wait_for(ready, 150, "the replica on Ray ready")
    rid = "deployment-" + r.json()["id"] + "-0"
    assert plane.executor.client.get_job_status(rid).value == "RUNNING"
    worker = plane.client.app.state.platform.deployments.pick(r.json()["id"])
    # It binds the address of the node Ray placed it on, and the gateway reaches it there.
    node = urlparse(plane.executor.client.get_job_info(rid).driver_agent_http_address).hostname
    assert worker.url().startswith(f"http://{node}:")
    chat = api.post(
        "/v1/chat/completions",
        json={"model": "raydep", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    assert api.delete("/api/v1/deployments/raydep").status_code in (200, 204)
    wait_for(
        lambda: plane.executor.client.get_job_status(rid).value in ("STOPPED", "SUCCEEDED", "FAILED"),
        60,
        "the replica's Ray job stopped",
    )


def test_a_restarted_control_plane_reattaches_to_its_ray_job(api, plane):
    from tuneforge.jobs.ray_executor import RayExecutor

    job = _command(api, "import time; print('run', flush=True); time.sleep(6); print('done')")
    wait_for(lambda: "run\n" in _log(api, job["id"]), 90, "the job running")
    plane.stop()  # a clean stop leaves Ray's jobs running
    assert plane.executor.client.get_job_status(job["id"]).value == "RUNNING"
    # A fresh executor (no memory of the job); the cluster checks ran at the module's first start.
    headers = {"Authorization": f"Bearer {plane.cluster.token}"}
    api = plane.start(executor=RayExecutor(plane.cluster.address, headers))
    done = wait_state(api, job["id"], ("succeeded", "failed", "cancelled"), 90)
    log = _log(api, job["id"])
    assert done["state"] == "succeeded", log
    assert log.count("--- attempt") == 1 and log.count("run\n") == 1 and "done" in log  # ran once
    events = api.get(f"/api/v1/jobs/{job['id']}/events").json()["data"]
    reattached = [e for e in events if e["event"] == "reconciled"]
    assert reattached and reattached[-1]["adopted"] is True, events
    print("after the restart:", reattached[-1])


def test_the_cluster_runs_at_the_suites_priority_once_up(cluster):
    """It starts ahead of the suite's processes when it can (as root: tests/support/raycluster.py), and
    must not stay ahead: its jobs would take the cores from the two workers' tests beside it."""
    import psutil

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    levels = {}
    for p in cluster.processes():
        with contextlib.suppress(psutil.Error):
            levels[" ".join(p.cmdline())[:60]] = p.nice()
    assert levels and set(levels.values()) == {ours}, levels


def test_a_submission_without_the_token_is_refused(cluster):
    from ray.job_submission import JobSubmissionClient

    r = httpx.post(cluster.address + "/api/jobs/", json={"entrypoint": "touch /tmp/pwned"}, timeout=10)
    assert r.status_code == 401
    from ray.exceptions import AuthenticationError

    with pytest.raises(AuthenticationError, match="Invalid authentication token"):
        JobSubmissionClient(cluster.address, headers={"Authorization": "Bearer wrong"}).submit_job(
            entrypoint="true"
        )


class _OpenRay(BaseHTTPRequestHandler):
    """A job API that answers anyone, as a Ray cluster without token authentication does."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_executor_refuses_a_cluster_that_takes_jobs_without_a_token(monkeypatch, tmp_path):
    from tuneforge.errors import ConfigError
    from tuneforge.jobs.ray_cluster import check_auth
    from tuneforge.platform.app import create_app
    from tuneforge.settings import Settings

    server = HTTPServer(("127.0.0.1", 0), _OpenRay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(ConfigError, match="TUNEFORGE_RAY_ALLOW_UNAUTHENTICATED=1") as err:
            create_app(Settings(home=tmp_path / "h", executor="ray", ray_address=address))
        assert "run code on every node" in str(err.value)
        assert check_auth(address, None, allow_unauthenticated=True) == {}  # said explicitly: it goes on
    finally:
        server.shutdown()
    with pytest.raises(ConfigError, match="TUNEFORGE_RAY_ADDRESS"):
        create_app(Settings(home=tmp_path / "h", executor="ray"))


def test_the_control_plane_imports_no_ray_unless_asked(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from tuneforge.platform.app import create_app; create_app(); "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    env = {**os.environ, "TUNEFORGE_HOME": str(tmp_path / "h")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_without_ray_installed_the_ray_executor_names_the_extra(monkeypatch):
    import sys

    from tuneforge.errors import MissingExtraError
    from tuneforge.jobs.ray_executor import RayExecutor

    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"tuneforge\[ray\]"):
        RayExecutor("http://127.0.0.1:1")
