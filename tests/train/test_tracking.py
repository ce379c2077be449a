"""train.report_to: MLflow and W&B get what the job folder holds; a missing package fails before the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import MEMO
from tests.support.clihelp import run_cli
from tests.support.platformhelp import fake_model, make_client, upload
from tests.support.trainhelp import run, tiny_spec
from tests.web import test_console
from tuneforge.jobs import folder as fmt
from tuneforge.jobs.ranks import free_port
from tuneforge.spec import parse_spec
from tuneforge.train.tracking import flatten


def metrics(folder: Path) -> list[dict]:
    return fmt.read_all_jsonl(folder / fmt.METRICS_FILE)


def history(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per figure, its (step, value) points, as metrics.jsonl holds them."""
    out: dict[str, list] = {}
    for r in records:
        for key, value in r.items():
            if key != "step" and type(value) in (int, float):
                out.setdefault(key, []).append((r["step"], float(value)))
    return {k: sorted(v) for k, v in out.items()}


def tracked_spec(tiny_llama, memo_data, report_to):
    # val_fraction: eval_loss rows at the same steps as train rows (two records with one step).
    return tiny_spec(
        tiny_llama,
        memo_data,
        train__max_steps=4,
        train__eval_steps=2,
        train__report_to=report_to,
        data__val_fraction=0.25,
        name="tracked",
    )


# -- the spec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, ["tensorboard"]),
        ("none", ["tensorboard"]),
        ("wandb", ["wandb"]),
        ("mlflow, wandb", ["mlflow", "wandb"]),
        (["tensorboard", "swanlab", "swanlab"], ["tensorboard", "swanlab"]),
    ],
)
def test_report_to_reads_llamafactory_spellings(tiny_llama, memo_data, value, expected):
    spec = tiny_spec(tiny_llama, memo_data)
    if value is not None:
        spec["train"]["report_to"] = value
    assert parse_spec(spec).train.report_to == expected


@pytest.mark.parametrize("value,message", [("all", "name the trackers"), (["comet"], "'tensorboard'")])
def test_report_to_refuses_all_and_unknown_tools(tiny_llama, memo_data, value, message):
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_spec(tiny_spec(tiny_llama, memo_data, train__report_to=value))


def test_llamafactory_report_to_converts(tmp_path, memo_data, tiny_llama):
    from tuneforge.convert.llamafactory import convert_llamafactory

    args = {
        "stage": "sft",
        "finetuning_type": "lora",
        "model_name_or_path": str(tiny_llama),
        "dataset_dir": str(memo_data.parent),
        "dataset": str(memo_data.name),
        "output_dir": str(tmp_path / "out"),
        "report_to": "wandb,mlflow",
    }
    conversion = convert_llamafactory(args, "test.yaml", base_dir=tmp_path)
    assert conversion.job_spec().train.report_to == ["wandb", "mlflow"]
    assert not any(n.startswith("report_to") for n in conversion.notes)


# -- a missing package: refused before anything starts ----------------------------------------------


@pytest.fixture
def no_mlflow(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importlib.util.find_spec answers None


def test_cli_names_the_extra_and_leaves_no_job_folder(no_mlflow, capsys, tmp_path, tiny_llama, memo_data):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tracked_spec(tiny_llama, memo_data, ["mlflow"])))
    code, _, err = run_cli(capsys, "train", spec, "-o", tmp_path / "job")
    assert code == 2, err
    assert "pip install 'tuneforge[mlflow]'" in err and "train.report_to" in err
    assert not (tmp_path / "job").exists()


def test_job_create_is_a_422_naming_the_extra(no_mlflow):
    fake_model("tiny")
    with make_client() as api:
        r = upload(api, "memo.json", json.dumps(MEMO), name="memo")
        assert r.status_code in (200, 201), r.text
        body = {"template": "sft-lora", "model": "tiny", "datasets": ["memo"]}
        r = api.post("/api/v1/jobs", json={**body, "overrides": {"train.report_to": ["mlflow"]}})
        assert r.status_code == 422, r.text
        problems = r.json()["problems"]
        assert [p["loc"] for p in problems] == [["spec", "train", "report_to"]]
        assert "pip install 'tuneforge[mlflow]'" in problems[0]["msg"]
        assert api.get("/api/v1/jobs").json()["data"] == []


# -- MLflow: a real server on 127.0.0.1 ---------------------------------------------------------------


@pytest.fixture
def mlflow_server(tmp_path):
    pytest.importorskip("mlflow.server", reason="the MLflow server is in `pip install 'tuneforge[mlflow]'`")
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    port = free_port()
    argv = [
        str(mlflow_bin),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination",
        str(tmp_path / "mlartifacts"),
    ]
    log = open(tmp_path / "mlflow-server.log", "wb")
    # MLflow 3's server also starts a job runner with seven Huey consumers (its UI's background jobs), each
    # importing mlflow: 46 s to the first answer on a loaded 2-core machine, 14 s without them.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "mlflow-server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


@pytest.mark.integration
def test_mlflow_run_holds_the_spec_and_equals_metrics_jsonl(
    mlflow_server, monkeypatch, tiny_llama, memo_data, tmp_path
):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tuneforge-tests")
    spec = tracked_spec(tiny_llama, memo_data, ["tensorboard", "mlflow"])
    folder = tmp_path / "job"
    run(spec, folder)

    (event,) = [e for e in fmt.read_all_jsonl(folder / fmt.EVENTS_FILE) if e["event"] == fmt.TRACKER]
    assert event["tool"] == "mlflow"
    assert fmt.tracker_runs(folder) == [{"tool": "mlflow", "run_id": event["run_id"], "url": event["url"]}]
    client = MlflowClient(mlflow_server)
    got = client.get_run(event["run_id"])
    experiment = client.get_experiment_by_name("tuneforge-tests")
    assert got.info.experiment_id == experiment.experiment_id and got.info.status == "FINISHED"
    assert got.info.run_name == "tracked"
    assert event["url"] == f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{event['run_id']}"

    # Parameters: the resolved spec the job folder holds, flattened.
    written = yaml.safe_load((folder / fmt.SPEC_FILE).read_text())
    assert got.data.params == flatten(written)
    assert got.data.params["train.learning_rate"] == "0.01"
    assert got.data.params["data.train.0.path"] == str(memo_data)
    assert got.data.params["output_dir"] == str(folder)

    # Every figure's history equals metrics.jsonl's.
    expected = history(metrics(folder))
    assert {"loss", "eval_loss", "grad_norm", "lr", "epoch"} <= set(expected)
    assert set(got.data.metrics) == set(expected)
    for key, points in expected.items():
        assert sorted((m.step, m.value) for m in client.get_metric_history(event["run_id"], key)) == points, (
            key
        )

    # The final model's path and lineage.
    lineage = json.loads((folder / fmt.FINAL_DIR / "tuneforge.json").read_text())
    assert got.data.tags["tuneforge.final_model"] == str(folder / fmt.FINAL_DIR)
    assert got.data.tags["tuneforge.lineage.base_model"] == lineage["base_model"]
    assert got.data.tags["tuneforge.lineage.finetuning"] == "lora"
    assert got.data.tags["tuneforge.status"] == fmt.FINISHED


# -- Weights & Biases, offline -----------------------------------------------------------------------


def wandb_records(run_dir: Path) -> list[dict]:
    """The run's transaction log as wandb's own reader prints it (`wandb leet inspect --json`)."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.integration
def test_wandb_offline_files_hold_metrics_jsonl(monkeypatch, tiny_llama, memo_data, tmp_path):
    pytest.importorskip("wandb", reason="W&B is in `pip install 'tuneforge[wandb]'`")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "tuneforge-tests")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    folder = tmp_path / "job"
    run(tracked_spec(tiny_llama, memo_data, ["wandb"]), folder)

    (event,) = [e for e in fmt.read_all_jsonl(folder / fmt.EVENTS_FILE) if e["event"] == fmt.TRACKER]
    assert event["tool"] == "wandb" and event["url"] is None  # offline: nothing to link to yet
    (run_dir,) = (folder / "wandb").glob(f"offline-run-*-{event['run_id']}")
    records = wandb_records(run_dir)
    rows = [
        {k: v for k, v in r["history"]["item"].items() if not k.startswith("_")}
        for r in records
        if r["type"] == "history"
    ]
    # One history row per metrics.jsonl record, same names, same steps, same values.
    expected = [
        {"step": m["step"], **{k: v for k, v in m.items() if type(v) in (int, float)}}
        for m in metrics(folder)
    ]
    assert len(rows) == len(expected) and len(rows) >= 4
    for row, want in zip(rows, expected, strict=True):
        assert row.keys() == want.keys()
        assert all(row[k] == pytest.approx(want[k], rel=1e-12) for k in want), (row, want)
    (head,) = [r for r in records if r["type"] == "run"]
    config = {k: v for k, v in head["run"]["config"]["update"].items() if k != "_wandb"}
    assert config == flatten(yaml.safe_load((folder / fmt.SPEC_FILE).read_text()))
    assert head["run"]["project"] == "tuneforge-tests"
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"]["update"])
    assert summary["tuneforge.final_model"] == str(folder / fmt.FINAL_DIR)
    assert [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"] == [0]


# -- the console's job page links to the tracker's run ------------------------------------------------


# the console tests' fixtures
browser, chromium, console_server = test_console.browser, test_console.chromium, test_console.console_server


def test_console_job_page_links_to_the_tracker_run(console_server, browser):
    from tests.web.test_console import shot, sign_in

    srv = console_server
    job_id = "job-00000000a11c"
    root = srv.home / "jobs" / job_id
    root.mkdir(parents=True)
    run_url = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"
    fmt.append_event(root, fmt.STARTED, pid=1)
    fmt.append_event(root, fmt.TRACKER, tool="mlflow", run_id="abc123", url=run_url)
    fmt.append_event(root, fmt.TRACKER, tool="wandb", run_id="w1", url=None)  # offline
    fmt.append_event(root, fmt.TRACKER, tool="swanlab", run_id="s1", url="javascript:alert(1)")  # a script's
    fmt.append_event(root, fmt.FINISHED, metrics={})
    test_console.insert_finished_jobs(
        srv, dict(id=job_id, folder=str(root), step=4, max_steps=4, created_at=time.time())
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, srv)
    page.goto(f"{srv.url}/#/jobs/{job_id}")
    page.wait_for_selector("ol.timeline li")
    shot(page, "20-job-tracker-link")
    link = page.wait_for_selector('[data-testid="tracker-mlflow"] a')
    assert link.get_attribute("href") == run_url and link.inner_text() == "mlflow abc123"
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert page.query_selector('[data-testid="tracker-wandb"] a') is None
    assert "wandb w1" in page.inner_text('[data-testid="tracker-wandb"]')
    assert page.query_selector('[data-testid="tracker-swanlab"] a') is None  # never a javascript: link


# -- SwanLab, offline -----------------------------------------------------------------------------------


def swanlab_records(run_dir: Path) -> list[dict]:
    """The run's record log through swanlab's own reader (the one `swanlab sync` uses)."""
    from google.protobuf.json_format import MessageToDict
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    reader = DataStoreReader()
    (path,) = run_dir.glob("run-*.swanlab")
    reader.open(path)
    out = []
    while (data := reader.scan()) is not None:
        record = Record()
        record.ParseFromString(data)
        out.append(MessageToDict(record))
    reader.close()
    return out


@pytest.mark.integration
def test_swanlab_offline_files_hold_metrics_jsonl(monkeypatch, tiny_llama, memo_data, tmp_path):
    pytest.importorskip("swanlab", reason="SwanLab is in `pip install 'tuneforge[swanlab]'`")
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    monkeypatch.setenv("SWANLAB_PROJ_NAME", "tuneforge-tests")
    monkeypatch.delenv("SWANLAB_LOG_DIR", raising=False)
    folder = tmp_path / "job"
    run(tracked_spec(tiny_llama, memo_data, ["swanlab"]), folder)

    (event,) = [e for e in fmt.read_all_jsonl(folder / fmt.EVENTS_FILE) if e["event"] == fmt.TRACKER]
    assert event["tool"] == "swanlab" and event["url"] is None
    (run_dir,) = (folder / "swanlog").glob(f"run-*-{event['run_id']}")
    records = swanlab_records(run_dir)
    scalars: dict[str, list] = {}
    for r in records:
        if "scalar" in r:
            scalars.setdefault(r["scalar"]["key"], []).append(
                (int(r["scalar"].get("step", 0)), float(r["scalar"]["value"].get("number", 0)))
            )
    # SwanLab keeps one value per figure and step: the first (the train record's epoch and wall_time,
    # not the eval record's at the same step). Its own system figures are under __swanlab__.
    first = {k: sorted(dict(reversed(v)).items()) for k, v in history(metrics(folder)).items()}
    assert {k: sorted(v) for k, v in scalars.items() if not k.startswith("__swanlab__.")} == first
    (start,) = [r["start"] for r in records if "start" in r]
    assert start["project"] == "tuneforge-tests" and start["name"] == "tracked"
    assert [r["finish"]["state"] for r in records if "finish" in r] == ["RUN_STATE_FINISHED"]
    config = (run_dir / "files" / "config.yaml").read_text()
    assert "train.learning_rate" in config and str(memo_data) in config
