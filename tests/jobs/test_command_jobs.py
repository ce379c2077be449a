"""Jobs of kind `command`: a user's own script through the control plane's queue, logs, metrics, restart
policy and registry (SQLite; real worker processes)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.platformhelp import (
    cli_on,
    fake_model,
    make_client,
    store_model,
    upload,
    wait_for,
    wait_state,
)

# The user's script: reads the mounted dataset, trains a LoRA on the mounted tiny base with plain torch,
# writes TensorBoard scalars, then waits for the test's go-ahead before saving its adapter (so the test can
# look at the log and metrics while it is still running).
TRAIN_SCRIPT = r"""
import json, os, sys, time
with open(os.path.join(os.environ["TUNEFORGE_OUTPUT_DIR"], "env.json"), "w") as fh:
    json.dump(dict(os.environ), fh)  # before torch's import adds its own variables
import torch
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model

data_dir, base_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = os.environ["TUNEFORGE_OUTPUT_DIR"]
rows = []
for name in sorted(os.listdir(data_dir)):
    with open(os.path.join(data_dir, name)) as fh:
        rows += [json.loads(line) for line in fh if line.strip()]
print(f"read {len(rows)} records from {data_dir}", flush=True)
tok = AutoTokenizer.from_pretrained(base_dir)
torch.manual_seed(0)
lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora)
texts = [r["content"] + " -> " + r["summary"] for r in rows]
batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=48)
labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
writer = SummaryWriter(os.path.join(out, "runs"))
for step in range(1, steps + 1):
    loss = model(**batch, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    writer.add_scalar("train/loss", loss.item(), step)
    writer.add_scalar("train/learning_rate", 5e-2, step)
    writer.flush()
    print(f"step {step} loss {loss.item():.4f}", flush=True)
writer.add_scalar("eval/loss", loss.item(), steps)
writer.close()
deadline = time.time() + 120
while not os.path.exists(os.path.join(out, "go")) and time.time() < deadline:
    time.sleep(0.1)
model.save_pretrained(os.path.join(out, f"checkpoint-{steps}"))
print("saved", flush=True)
"""

ADVERTISEGEN = [
    {"content": "类型#裙*颜色#蓝色*风格#清新", "summary": "清新的蓝色连衣裙，夏天穿很舒服。"},
    {"content": "类型#上衣*材质#棉*风格#简约", "summary": "简约棉质上衣，百搭又透气。"},
    {"content": "类型#裤*版型#宽松*风格#休闲", "summary": "宽松休闲裤，舒适自在。"},
    {"content": "类型#鞋*颜色#白色*风格#运动", "summary": "白色运动鞋，轻便耐穿。"},
]


def zip_bytes(files: dict[str, str | bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) & 0xFFFF0000
            zf.writestr(info, target)
    return buf.getvalue()


def upload_code(client, files: dict, **kw):
    return client.post("/api/v1/jobs/code", files={"file": ("code.zip", zip_bytes(files, **kw))})


TERMINAL = ("succeeded", "failed", "cancelled")


def command_body(**fields) -> dict:
    return {"kind": "command", "name": "t", "command": ["python", "-c", "print(1)"], **fields}


def _events(client, job_id) -> list[dict]:
    return client.get(f"/api/v1/jobs/{job_id}/events").json()["data"]


def _gone(pid: int) -> bool:
    from tuneforge.jobs.executor import process_start_ticks

    return process_start_ticks(pid) is None  # no such process, or a zombie (it has exited)


@pytest.fixture
def server(tiny_llama, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_MAX_CONCURRENT_JOBS", "2")
    monkeypatch.setenv("TUNEFORGE_SERVER_SECRET_FOR_TEST", "must-not-leak")
    store_model(tiny_llama, "tiny")
    with make_client(supervise=True, cancel_grace_s=1.0) as client:
        data = "\n".join(json.dumps(r, ensure_ascii=False) for r in ADVERTISEGEN * 2)
        r = upload(client, "train.jsonl", data, name="advertisegen", map="prompt=content,response=summary")
        assert r.status_code == 201, r.text
        yield client


def test_own_lora_script_streams_logs_reports_loss_and_registers_its_adapter(server, tiny_llama):
    code = upload_code(server, {"train.py": TRAIN_SCRIPT, "output/.keep": ""})
    assert code.status_code == 201, code.text
    steps = 6
    body = command_body(
        name="adgen-lora",
        code=code.json()["id"],
        command=["python", "train.py", "data/AdvertiseGen", "base", str(steps)],
        datasets=[{"name": "advertisegen", "path": "data/AdvertiseGen"}],
        models=[{"name": "tiny", "path": "base"}],
        env={"MY_FLAG": "1"},
        priority=10,
        labels={"job_type": "pytorch"},
    )
    r = server.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "command" and job["labels"] == {"job_type": "pytorch"} and job["priority"] == 10
    root = server.app.state.platform.jobs_dir / job["id"]
    # The code was unpacked into the job's own folder; the mounts are links into the stores.
    assert (root / "work" / "train.py").read_text() == TRAIN_SCRIPT
    assert (root / "work" / "data" / "AdvertiseGen").is_symlink()
    assert (root / "work" / "output").resolve() == (root / "output").resolve()

    # While it runs (it waits for `go`), its log streams and its TensorBoard loss shows in metrics.
    def log_text():
        return server.get(f"/api/v1/jobs/{job['id']}/logs").text

    wait_for(lambda: f"step {steps} loss" in log_text(), 180, "the script's log")
    assert "read 8 records from data/AdvertiseGen" in log_text()

    def metrics():
        return server.get(f"/api/v1/jobs/{job['id']}/metrics").json()["data"]

    wait_for(lambda: any("eval_loss" in m for m in metrics()), 30, "metrics from TensorBoard")
    rows = [m for m in metrics() if "loss" in m]
    assert server.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "running"
    assert [m["step"] for m in rows] == list(range(1, steps + 1))
    logged = [float(line.split()[-1]) for line in log_text().splitlines() if line.startswith("step ")]
    assert [round(m["loss"], 4) for m in rows] == logged  # the same numbers the script printed
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.9  # it learns
    assert all(m["learning_rate"] == pytest.approx(5e-2) for m in rows)
    assert [m for m in metrics() if "eval_loss" in m][0]["step"] == steps

    (root / "output" / "go").touch()
    done = wait_state(server, job["id"], ("succeeded", "failed"), 120)
    assert done["state"] == "succeeded", done
    assert done["exit_code"] == 0 and done["latest_metrics"]["loss"] == rows[-1]["loss"]
    kinds = [e["event"] for e in _events(server, job["id"]) if e["event"] != "mounts"]
    assert kinds[:3] == ["queued", "launched", "started"] and kinds[-1] == "exited"
    assert _events(server, job["id"])[-1]["exit_code"] == 0

    # A clean environment: the server's own variables stay out; the job's places and --env are in.
    env = json.loads((root / "output" / "env.json").read_text())
    assert "TUNEFORGE_SERVER_SECRET_FOR_TEST" not in env and "TUNEFORGE_HOME" not in env
    assert env["MY_FLAG"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["TUNEFORGE_OUTPUT_DIR"] == str(root / "output")
    assert (Path(env["TUNEFORGE_DATA_DIR"]) / "advertisegen" / "train.jsonl").is_file()
    assert set(env) == {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "MY_FLAG", "CUDA_VISIBLE_DEVICES"} | {
        "TUNEFORGE_OUTPUT_DIR",
        "TUNEFORGE_DATA_DIR",
        "TUNEFORGE_JOB_ID",
    }

    # Register the adapter: checked against its base; a wrong folder or base is refused.
    reg = {"job": job["id"], "name": "adgen", "path": f"output/checkpoint-{steps}", "base": "tiny"}
    bad_folder = server.post("/api/v1/models/register", json={**reg, "path": "output/runs"})
    assert bad_folder.status_code == 422 and "neither an HF model" in bad_folder.json()["detail"]
    fake_model("other")
    bad_base = server.post("/api/v1/models/register", json={**reg, "base": "other"})
    assert bad_base.status_code == 422 and "not on 'other'" in bad_base.json()["detail"], bad_base.text
    escape = server.post("/api/v1/models/register", json={**reg, "path": "../../models/tiny"})
    assert escape.status_code == 404
    r = server.post("/api/v1/models/register", json=reg)
    assert r.status_code == 201, r.text
    registered = r.json()
    assert registered["ref"] == "adgen@1" and registered["base_model"] == "tiny"
    assert registered["lineage"]["kind"] == "adapter"
    assert registered["lineage"]["datasets"] == [done["spec"]["datasets"][0]["name"]]

    # It names its stored base for evaluation and serving (the script recorded a path in its job folder).
    from tuneforge.models.inference import adapter_base
    from tuneforge.settings import get_settings

    assert Path(adapter_base(Path(registered["path"]))) == get_settings().models_dir / "tiny"
    # It loads on the tiny base and changes its answers.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 6, 7, 8]])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, registered["path"])
        after = tuned(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


# Exits 1 on its first two attempts (a counter kept in its output folder), 0 on the third.
FAIL_TWICE = """
import os, sys
p = os.path.join(os.environ['TUNEFORGE_OUTPUT_DIR'], 'attempts')
n = int(open(p).read()) + 1 if os.path.exists(p) else 1
open(p, 'w').write(str(n))
records = sum(1 for _ in open('data/AdvertiseGen/train.jsonl'))
print('attempt', n, sys.argv[1:], records, 'records', os.environ['A'], flush=True)
sys.exit(1 if n < 3 else 0)
"""


def test_on_failure_restarts_until_it_succeeds_and_the_time_limit_stops_it(server, monkeypatch, tmp_path):
    workdir = tmp_path / "mycode"
    (workdir / ".git").mkdir(parents=True)
    (workdir / ".git" / "HEAD").write_text("ref")
    (workdir / "fail_twice.py").write_text(FAIL_TWICE)
    args = ["jobs", "submit", "--name", "flaky", "--workdir", str(workdir), "--json"]
    args += ["--dataset", "advertisegen:data/AdvertiseGen", "--priority", "high", "--gpus", "0"]
    args += ["--restart-policy", "on-failure", "--max-retries", "2", "--env", "A=x=1", "--label", "k=v"]
    job = json.loads(cli_on(server, monkeypatch, *args, "--", "python", "fail_twice.py", "--flag").stdout)
    assert job["priority"] == 10 and job["restart_policy"] == "on-failure" and job["max_retries"] == 2
    assert job["spec"]["command"] == ["python", "fail_twice.py", "--flag"] and job["labels"] == {"k": "v"}
    root = server.app.state.platform.jobs_dir / job["id"]
    assert not (root / "work" / ".git").exists()  # the CLI leaves VCS folders out of the upload
    limited = server.post(
        "/api/v1/jobs",
        json=command_body(
            command=["sleep", "60"], time_limit_s=1.0, restart_policy="on-failure", max_retries=3
        ),
    ).json()
    done = wait_state(server, job["id"], ("succeeded", "failed"), 60)
    assert done["state"] == "succeeded" and done["attempt"] == 3, done
    events = _events(server, job["id"])
    assert [e["exit_code"] for e in events if e["event"] == "exited"] == [1, 1, 0]
    assert [e["attempt"] for e in events if e["event"] == "restarting"] == [2, 3]
    log = cli_on(server, monkeypatch, "jobs", "logs", job["id"]).stdout
    assert [line for line in log.splitlines() if line.startswith("attempt")] == [
        f"attempt {n} ['--flag'] 8 records x=1" for n in (1, 2, 3)
    ]
    # The same script with one retry too few ends failed with its exit code.
    body = {**job["spec"], "max_retries": 1}
    failed = wait_state(
        server, server.post("/api/v1/jobs", json=body).json()["id"], ("succeeded", "failed"), 60
    )
    assert failed["state"] == "failed" and failed["exit_code"] == 1
    assert failed["error"]["message"] == "the worker exited with code 1"
    assert "attempt 2" in failed["error"]["log_tail"]

    stopped = wait_state(server, limited["id"], ("succeeded", "failed", "cancelled"), 60)
    assert stopped["state"] == "failed" and stopped["attempt"] == 1  # a time limit is not retried
    assert "time limit of 1 s" in stopped["error"]["message"]
    assert "time_limit" in [e["event"] for e in _events(server, limited["id"])]


def test_cancel_kills_the_whole_process_group(server):
    # A shell that ignores SIGTERM (so SIGKILL after the grace is needed) with a child of its own.
    script = "trap '' TERM; sleep 300 & echo $! > \"$TUNEFORGE_OUTPUT_DIR/child.pid\"; echo started; wait"
    job = server.post("/api/v1/jobs", json=command_body(command=["bash", "-c", script])).json()
    root = server.app.state.platform.jobs_dir / job["id"]
    child_file = root / "output" / "child.pid"
    wait_for(lambda: child_file.exists() and child_file.read_text().strip(), 30, "the child's pid")
    child = int(child_file.read_text())
    from tuneforge.platform.db import Job

    with server.app.state.platform.store.session() as s:
        leader = s.get(Job, job["id"]).pid
    assert not _gone(leader) and not _gone(child)
    assert server.post(f"/api/v1/jobs/{job['id']}/cancel").json()["state"] == "running"
    done = wait_state(server, job["id"], ("cancelled", "failed", "succeeded"), 30)
    assert done["state"] == "cancelled"
    wait_for(lambda: _gone(leader) and _gone(child), 10, "no process of the job left")
    kinds = [e["event"] for e in _events(server, job["id"])]
    assert kinds[-3:] == ["cancel_requested", "exited", "cancelled"]

    # A leader that dies on SIGTERM at once, with a child that ignores it: SIGKILL still reaches the child.
    child_code = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(os.environ['TUNEFORGE_OUTPUT_DIR'] + '/child.pid', 'w').write(str(os.getpid())); "
        "time.sleep(300)"
    )
    job = server.post(
        "/api/v1/jobs", json=command_body(command=["bash", "-c", f'python -c "{child_code}" & wait'])
    ).json()
    child_file = server.app.state.platform.jobs_dir / job["id"] / "output" / "child.pid"
    wait_for(lambda: child_file.exists() and child_file.read_text().strip(), 60, "the child's pid")
    child = int(child_file.read_text())
    server.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert wait_state(server, job["id"], ("cancelled", "failed", "succeeded"), 30)["state"] == "cancelled"
    wait_for(lambda: _gone(child), 10, "the child that ignored SIGTERM to be killed")


# Tries to change the store through every way the job folder reaches it; reports what each try met.
WRITE_THE_MOUNTS = """
import errno, json, os, subprocess
F = "data/AdvertiseGen/train.jsonl"


def through_the_servers_root():  # the server's own view of the store, from outside the namespace
    runner = os.getppid()
    server = int(open(f"/proc/{runner}/stat").read().rsplit(")", 1)[1].split()[1])
    open(f"/proc/{server}/root" + os.path.realpath(F), "a").write("x")


def unmount_then_write():  # root in the namespace tries to take the read-only binds away
    d = os.path.dirname(os.path.realpath(F))
    while d != "/":
        subprocess.run(["umount", d], capture_output=True)
        d = os.path.dirname(d)
    open(F, "a").write("x")


tries = {
    "append_to_dataset_file": lambda: open(F, "a").write("x"),
    "new_file_in_dataset_folder": lambda: open("data/AdvertiseGen/new.jsonl", "w").write("x"),
    "dataset_by_name": lambda: open(os.environ["TUNEFORGE_DATA_DIR"] + "/advertisegen/train.jsonl", "w"),
    "chmod_then_write": lambda: (os.chmod(F, 0o666), open(F, "w")),
    "up_from_the_mount": lambda: open("data/AdvertiseGen/../intruder", "w").write("x"),
    "model_file": lambda: open("base/config.json", "w").write("{}"),
    "delete_model_file": lambda: os.remove("base/model.json"),
    "unmount_then_write": lambda: unmount_then_write(),
    "through_the_servers_root": lambda: through_the_servers_root(),
    "output": lambda: open(os.environ["TUNEFORGE_OUTPUT_DIR"] + "/ok.txt", "w").write("ok"),
}
met = {}
for name, attempt in tries.items():
    try:
        attempt()
        met[name] = "written"
    except OSError as exc:
        met[name] = errno.errorcode[exc.errno]
        print(name, exc, flush=True)
open("output/met.json", "w").write(json.dumps(met))
"""


def _store_digest(*roots: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _namespaces_here() -> str | None:
    """Why this machine gives no mount namespace (util-linux's own probe, not the code under test)."""
    import os
    import subprocess

    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    if os.geteuid() != 0:
        probe[1:1] = ["--user", "--map-current-user"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return str(exc)
    return None if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


def test_mounts_are_read_only_inside_the_job_and_the_fallback_says_so(server, monkeypatch):
    from tuneforge.data.store import datasets_root
    from tuneforge.models.store import models_root

    mounts = {
        "datasets": [{"name": "advertisegen", "path": "data/AdvertiseGen"}],
        "models": [{"name": "tiny", "path": "base"}],
    }
    # Turned off (as where namespaces are missing): the job still runs, and says once that it is unprotected.
    with monkeypatch.context() as m:
        m.setattr(server.app.state.platform.settings, "isolate_command_mounts", False)
        body = command_body(
            command=["python", "-c", "print(open('data/AdvertiseGen/train.jsonl').read()[:1])"]
        )
        job = server.post("/api/v1/jobs", json={**body, **mounts}).json()
        job = wait_state(server, job["id"], ("succeeded", "failed"), 60)
    assert job["state"] == "succeeded" and job["exit_code"] == 0, job
    mounted = [e for e in _events(server, job["id"]) if e["event"] == "mounts"]
    assert len(mounted) == 1 and mounted[0]["read_only"] is False
    assert "TUNEFORGE_ISOLATE_COMMAND_MOUNTS=false" in mounted[0]["reason"]
    log = server.get(f"/api/v1/jobs/{job['id']}/logs").text
    assert log.count("mounts are not enforced read-only: turned off") == 1 and "{" in log

    if why := _namespaces_here():
        pytest.skip(f"no mount namespaces on this machine ({why}): read-only mounts are not enforced here")
    before = _store_digest(datasets_root(), models_root())
    body = command_body(command=["python", "-c", WRITE_THE_MOUNTS], **mounts)
    job = wait_state(server, server.post("/api/v1/jobs", json=body).json()["id"], ("succeeded", "failed"), 60)
    assert job["state"] == "succeeded", job
    root = server.app.state.platform.jobs_dir / job["id"]
    met = json.loads((root / "output" / "met.json").read_text())
    # Run as root here: only the mount namespace stops these (file modes do not stop root).
    # the server's root is refused by the kernel's ptrace check (the command lost CAP_SYS_PTRACE)
    expected = {**dict.fromkeys(met, "EROFS"), "output": "written", "through_the_servers_root": "EACCES"}
    assert met == expected, met
    assert (root / "output" / "ok.txt").read_text() == "ok"
    assert "Read-only file system" in server.get(f"/api/v1/jobs/{job['id']}/logs").text
    assert _store_digest(datasets_root(), models_root()) == before  # not a byte of the store changed
    mounted = [e for e in _events(server, job["id"]) if e["event"] == "mounts"]
    assert len(mounted) == 1 and mounted[0]["read_only"] is True
    # The paths the script sees are the same as without the namespace.
    assert (root / "work" / "data" / "AdvertiseGen").is_symlink() and (root / "work" / "base").is_symlink()


def test_the_runner_falls_back_when_it_cannot_mount_and_records_the_exit_code(tmp_path):
    """A real failure of the mount (a path that is not there): the command runs all the same."""
    import subprocess
    import sys

    from tuneforge.jobs import folder as fmt

    runner = [sys.executable, "-I", "-m", "tuneforge.jobs.command_runner", "--folder", str(tmp_path)]
    argv = [*runner, "--attempt", "2", "--read-only", str(tmp_path / "missing"), "--", "sh", "-c", "exit 5"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 5
    assert done.stderr.count("mounts are not enforced read-only: ") == 1
    event = [e for e in fmt.read_all_jsonl(tmp_path / fmt.EVENTS_FILE) if e["event"] == "mounts"]
    assert len(event) == 1 and event[0]["read_only"] is False
    if not _namespaces_here():  # the namespace was there: the bind of the missing path is what failed
        assert "bind-mounting" in event[0]["reason"] and "No such file or directory" in event[0]["reason"]
    assert fmt.read_exit_code(tmp_path, 2) == 5 and fmt.read_exit_code(tmp_path, 1) is None
    # A command that cannot start is an exit code too (the shell's 127), recorded like any other.
    argv = [*runner, "--attempt", "3", "--", "no-such-command-here"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 127 and "cannot run 'no-such-command-here'" in done.stderr
    assert fmt.read_exit_code(tmp_path, 3) == 127


# Waits for `go` in its working folder, then exits with the code it was given.
WAIT_THEN_EXIT = (
    "import os, sys, time\nwhile not os.path.exists('go'): time.sleep(0.05)\nsys.exit(int(sys.argv[1]))"
)


def test_a_job_adopted_across_a_restart_ends_with_its_own_exit_code(monkeypatch):
    import os
    import signal

    from tuneforge.platform.db import Job

    monkeypatch.setenv("TUNEFORGE_MAX_CONCURRENT_JOBS", "3")
    pids = []
    try:
        with make_client(supervise=True) as client:
            ctx = client.app.state.platform
            jobs = {}
            for name, code in (("ok", 0), ("three", 3), ("ended_while_down", 0)):
                body = command_body(name=name, command=["python", "-c", WAIT_THEN_EXIT, str(code)])
                jobs[name] = client.post("/api/v1/jobs", json=body).json()["id"]
            for job_id in jobs.values():
                wait_state(client, job_id, ("running",), 30)
                with ctx.store.session() as s:
                    pids.append(s.get(Job, job_id).pid)
            work = {name: ctx.jobs_dir / job_id / "work" for name, job_id in jobs.items()}
        # The control plane is gone; its jobs are not. One of them ends before the next one starts.
        assert all(not _gone(pid) for pid in pids)
        (work["ended_while_down"] / "go").touch()
        wait_for(lambda: _gone(pids[2]), 30, "the job that ends while no server runs")
        with make_client(supervise=True) as client:
            reconciled = {
                name: [e for e in _events(client, job_id) if e["event"] == "reconciled"]
                for name, job_id in jobs.items()
            }
            assert [r[0]["adopted"] for r in reconciled.values()] == [True, True, False]
            assert client.get(f"/api/v1/jobs/{jobs['ok']}").json()["state"] == "running"
            (work["ok"] / "go").touch()
            (work["three"] / "go").touch()
            ends = {name: wait_state(client, job_id, TERMINAL, 30) for name, job_id in jobs.items()}
        assert {name: (j["state"], j["exit_code"]) for name, j in ends.items()} == {
            "ok": ("succeeded", 0),
            "three": ("failed", 3),
            "ended_while_down": ("succeeded", 0),
        }
        assert ends["three"]["error"]["message"] == "the worker exited with code 3"
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_submission_is_checked_before_anything_runs(tiny_llama, monkeypatch):
    fake_model("tiny")
    with make_client() as client:
        ctx = client.app.state.platform
        assert upload(client, "t.jsonl", json.dumps({"prompt": "a", "response": "b"})).status_code == 201

        def refused(status, fragment, **fields):
            r = client.post("/api/v1/jobs", json=command_body(**fields))
            assert r.status_code == status, r.text
            assert fragment in r.text, r.text
            return r.json()

        r = refused(422, "'..' is refused", datasets=[{"name": "t", "path": "../escape"}])
        assert r["problems"][0]["loc"] == ["body", "datasets", 0, "path"]
        refused(422, "absolute paths are refused", datasets=[{"name": "t", "path": "/etc/x"}])
        refused(422, "'..' is refused", output="out/../../x")
        refused(422, "overlaps", datasets=[{"name": "t", "path": "output/d"}])
        refused(422, "no stored dataset 'nope'", datasets=[{"name": "nope", "path": "d"}])
        refused(422, "no model 'nope'", models=[{"name": "nope", "path": "m"}])
        refused(422, "set by the server", env={"CUDA_VISIBLE_DEVICES": "0"})
        refused(422, "not a variable name", env={"A-B": "1"})
        refused(422, "this machine has 0", gpus=1)
        refused(422, "no uploaded code", code="code-000000000000")
        refused(422, "command", command=[])
        # The code may not already hold a file where a mount goes.
        code = upload_code(client, {"train.py": "print(1)", "data": "a file"}).json()["id"]
        refused(422, "already has a file at 'data'", code=code, datasets=[{"name": "t", "path": "data/x"}])

        # Hostile archives: nothing is kept.
        for files, kw, fragment in (
            ({"../evil.py": "x"}, {}, "outside the folder"),
            ({"/abs.py": "x"}, {}, "outside the folder"),
            ({"ok.py": "x"}, {"symlinks": {"link": "/etc/passwd"}}, "symbolic link"),
        ):
            r = upload_code(client, files, **kw)
            assert r.status_code == 422 and fragment in r.text, r.text
        r = client.post("/api/v1/jobs/code", files={"file": ("code.zip", b"not a zip at all")})
        assert r.status_code == 422 and "not a readable zip" in r.text
        assert sorted(p.name for p in (ctx.home / "code").iterdir()) == [f"{code}.zip"]
        assert [p.name for p in ctx.jobs_dir.iterdir()] == []  # refused jobs leave no folder
        assert client.get("/api/v1/jobs").json()["data"] == []

        # A deployment-scoped token cannot upload code or submit.
        token = client.post("/api/v1/tokens", json={"name": "d", "scope": "deployment:x"}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert client.post("/api/v1/jobs", json=command_body(), headers=headers).status_code == 403
        r = client.post(
            "/api/v1/jobs/code", files={"file": ("c.zip", zip_bytes({"a": "b"}))}, headers=headers
        )
        assert r.status_code == 403
        # A good one is accepted (the supervisor is off: it stays queued).
        assert client.post("/api/v1/jobs", json=command_body(code=code)).status_code == 201

    # The kill switch.
    monkeypatch.setenv("TUNEFORGE_ALLOW_COMMAND_JOBS", "false")
    from tuneforge.settings import get_settings

    get_settings.cache_clear()
    with make_client() as client:
        r = client.post("/api/v1/jobs", json=command_body())
        assert r.status_code == 403 and "TUNEFORGE_ALLOW_COMMAND_JOBS=false" in r.json()["detail"]
        assert upload_code(client, {"a.py": "x"}).status_code == 403
        # Spec jobs are unaffected: this one fails validation (422), not the switch.
        assert client.post("/api/v1/jobs", json={"template": "sft-lora"}).status_code == 422


def test_the_cli_says_each_refused_field_once(monkeypatch, capsys):
    """A 422 with field problems: one line each (the detail joins the same problems; it printed twice)."""
    import sys

    from tuneforge.cli import client as cli_client
    from tuneforge.cli.main import main

    with make_client() as client:

        def init(self, url=None, token=None, timeout=60.0):
            self.url, self.http = "http://testserver", client

        monkeypatch.setattr(cli_client.Client, "__init__", init)
        argv = [
            "tuneforge",
            "jobs",
            "submit",
            "--name",
            "poke",
            "--dataset",
            "advertisegen:data/AdvertiseGen",
        ]
        argv += ["--model", "nope:m", "--", "true"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exited:
            main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("no stored dataset 'advertisegen'") == 1, err
    assert err.count("no model 'nope'") == 1, err
    assert err.startswith("error: body.datasets.0.name: no stored dataset 'advertisegen'"), err


def test_tensorboard_scalars_become_metrics_incrementally(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from tuneforge.jobs.tbmetrics import TensorBoardTail, metric_name

    assert [
        metric_name(t) for t in ("loss", "train/loss", "eval/loss", "train/learning_rate", "eval/acc")
    ] == [
        "loss",
        "loss",
        "eval_loss",
        "learning_rate",
        "eval_acc",
    ]
    assert metric_name("custom/grad/norm") == "custom_grad_norm"
    writer = SummaryWriter(str(tmp_path / "output" / "runs"))
    tail = TensorBoardTail(tmp_path)
    assert tail.poll() == 0
    for step in (1, 2):
        writer.add_scalar("train/loss", 3.0 - step, step)
        writer.add_scalar("custom/acc", 0.5 * step, step)
    writer.add_text("note", "not a scalar", 2)
    writer.flush()
    assert tail.poll() == 2
    writer.add_scalar("loss", 0.5, 3)
    writer.add_scalar("eval/loss", 0.75, 3)
    writer.close()
    assert tail.poll() == 1
    assert tail.poll() == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("loss"), r.get("custom_acc"), r.get("eval_loss")) for r in rows] == [
        (1, 2.0, 0.5, None),
        (2, 1.0, 1.0, None),
        (3, 0.5, None, 0.75),
    ]
    # A control plane restarted mid-job reads the files again without writing a row twice.
    assert TensorBoardTail(tmp_path).poll() == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    # The script swaps its event file for a FIFO after it was found: polls go on without blocking (the
    # file was opened once and is read by descriptor; tensorboard's loader opened it again by name).
    import os
    import threading

    (event_file,) = (tmp_path / "output" / "runs").glob("events.out.tfevents*")
    event_file.rename(tmp_path / "moved")
    os.mkfifo(event_file)
    done = threading.Event()

    def poll_both():
        tail.poll()
        TensorBoardTail(tmp_path).poll()
        done.set()

    threading.Thread(target=poll_both, daemon=True).start()
    assert done.wait(10), "a poll blocked on the FIFO"
    tail.close()


# The job folder is the script's to write: it plants FIFOs and a link where the control plane reads.
PLANT_FIFOS = """
import os
root = os.path.dirname(os.environ["TUNEFORGE_OUTPUT_DIR"])
for name in ("events.jsonl", "metrics.jsonl", "exit_code.json", "log.txt"):
    path = os.path.join(root, name)
    if os.path.lexists(path):
        os.remove(path)
    os.mkdir(path) if name == "events.jsonl" else os.mkfifo(path)  # a folder cannot be unlinked
os.mkfifo(os.path.join(os.environ["TUNEFORGE_OUTPUT_DIR"], "events.out.tfevents.1.planted"))
print("planted", flush=True)
"""


def test_fifos_planted_in_the_job_folder_block_nothing(server):
    """Every report file the control plane reads or appends to is replaced by a FIFO (and a FIFO named
    like a TensorBoard event file): the job still ends succeeded with its exit code, and its events,
    logs and metrics answer at once instead of blocking the supervisor or the API for ever."""
    job = server.post("/api/v1/jobs", json=command_body(command=["python", "-c", PLANT_FIFOS])).json()
    job = wait_state(server, job["id"], ("succeeded", "failed"), 60)
    assert job["state"] == "succeeded" and job["exit_code"] == 0, job
    started = time.monotonic()
    assert server.get(f"/api/v1/jobs/{job['id']}/logs").status_code == 200
    assert [e["event"] for e in _events(server, job["id"])][-1:] == ["exited"]  # written to a new file
    assert server.get(f"/api/v1/jobs/{job['id']}/metrics").status_code == 200
    assert time.monotonic() - started < 5
    again = server.post("/api/v1/jobs", json=command_body()).json()  # the supervisor still runs jobs
    assert wait_state(server, again["id"], ("succeeded", "failed"), 60)["state"] == "succeeded"
