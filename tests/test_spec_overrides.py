"""One rule for `--set` values and dotted overrides: `tuneforge train --set`, `tuneforge jobs create --set`
and the REST API's `overrides` give the same spec."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import MEMO
from tests.support.clihelp import run_cli
from tests.support.platformhelp import RunningApp, fake_model, make_client, upload

# (dotted key, what a user types after `--set key=`, the value the spec holds)
TABLE = [
    ("train.learning_rate", "1e-4", 1e-4),  # YAML 1.1 reads an exponent without a dot as a string
    ("train.learning_rate", "2.5E-5", 2.5e-5),
    ("train.learning_rate", "+3e-4", 3e-4),
    ("train.learning_rate", "0.001", 0.001),
    ("train.weight_decay", ".5e-2", 0.005),
    ("train.epochs", "2", 2.0),
    ("train.max_steps", "10", 10),
    ("train.max_steps", "", None),
    ("data.packing", "false", False),
    ("data.packing", "true", True),
    ("lora.target_modules", "[q_proj, v_proj]", ["q_proj", "v_proj"]),
    ("data.chat_template", "chatml", "chatml"),
    ("name", "'1e5'", "1e5"),  # quoted: a string, however it looks
    ("name", '"2.0"', "2.0"),
    ("name", "'true'", "true"),
    ("name", "run-1e5", "run-1e5"),
]


def _at(spec: dict, key: str):
    for part in key.split("."):
        spec = spec[part]
    return spec


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("1e-4", 1e-4),
        ("-2E3", -2000.0),
        ("'1e-4'", "1e-4"),
        ("true", True),
        ("'true'", "true"),
        ("8", 8),
        ("1.5", 1.5),
        ("", None),
        ("null", None),
        ("[a, 1e-3]", ["a", 1e-3]),
        ("1e", "1e"),
        ("v1.0", "v1.0"),
        ("1.2.3", "1.2.3"),
    ],
)
def test_parse_value_reads_yaml_scalars_with_exponent_floats_and_quoted_strings(raw, expected):
    from tuneforge.spec import parse_value

    got = parse_value(raw)
    assert got == expected and type(got) is type(expected)


def test_set_errors_name_the_assignment():
    from tuneforge.errors import ConfigError
    from tuneforge.spec import set_dotted

    for assignment, message in [
        ("lr", "expected KEY=VALUE"),
        ("train=1", None),
        ("train.lr=[1", "not valid YAML"),
        ("a..b=1", "a name between the dots"),
    ]:
        data = {"train": 5} if assignment.startswith("train.") else {}
        if message is None:
            set_dotted(data, assignment)
            continue
        with pytest.raises(ConfigError, match=message) as got:
            set_dotted(data, assignment)
        assert f"--set {assignment!r}" in str(got.value)
    with pytest.raises(ConfigError, match=r"--set 'train.lr=1': 'train' is not a section\."):
        set_dotted({"train": 5}, "train.lr=1")


def test_train_cli_set_gives_the_table(capsys, tmp_path, monkeypatch):
    """`tuneforge train SPEC --set k=v`: the spec handed to the run (the run itself is not started)."""
    from tuneforge.train import run

    seen = []

    def fake_run(spec, output=None, **_):
        seen.append(spec.model_dump(mode="json"))
        return run.RunResult(tmp_path / "job", {})

    monkeypatch.setattr(run, "run_training", fake_run)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"template": "sft-lora", "model": "m", "data": {"train": "d.json"}}))
    wrong = []
    for key, raw, expected in TABLE:
        code, _, err = run_cli(capsys, "train", path, "--set", f"{key}={raw}", "--json")
        if code != 0 or _at(seen[-1], key) != expected:
            wrong.append((key, raw, err.strip() or _at(seen[-1], key)))
    assert wrong == []


def test_jobs_create_set_and_the_api_give_the_table(capsys, monkeypatch):
    """`tuneforge jobs create --set k=v` against a running server, and the same override as JSON."""
    fake_model("tiny")
    with make_client() as client:
        assert upload(client, "memo.json", json.dumps(MEMO), name="memo").status_code == 201
        base = {"template": "sft-lora", "model": "tiny", "datasets": ["memo"]}
        with RunningApp(client.app) as server:
            monkeypatch.setenv("TUNEFORGE_URL", server.url)
            monkeypatch.setenv("TUNEFORGE_TOKEN", client.headers["Authorization"].split()[1])
            wrong = []
            for key, raw, expected in TABLE:
                args = ["--template", "sft-lora", "--model", "tiny", "--dataset", "memo"]
                code, out, err = run_cli(capsys, "jobs", "create", *args, "--set", f"{key}={raw}", "--json")
                cli = _at(json.loads(out)["spec"], key) if code == 0 else err.strip()
                r = client.post("/api/v1/jobs", json={**base, "overrides": {key: expected}})
                api = _at(r.json()["spec"], key) if r.status_code == 201 else r.text
                if cli != expected or api != expected:
                    wrong.append((key, raw, cli, api))
    assert wrong == []


def test_api_override_problems_point_at_the_override():
    fake_model("tiny")
    with make_client() as client:
        assert upload(client, "memo.json", json.dumps(MEMO), name="memo").status_code == 201
        base = {"template": "sft-lora", "model": "tiny", "datasets": ["memo"]}
        r = client.post("/api/v1/jobs", json={**base, "overrides": {"train": 1, "train.seed": 2}})
        assert r.status_code == 422
        assert {"loc": ["body", "overrides", "train.seed"], "msg": "'train' is not a section"} in [
            {k: p[k] for k in ("loc", "msg")} for p in r.json()["problems"]
        ]
        r = client.post("/api/v1/jobs", json={**base, "template": "sft-lorra"})
        assert r.status_code == 422 and "unknown template" in r.text and "sft-lora" in r.text
        hostile = {"spec": {"template": ["x"], "model": "tiny", "data": {"train": "memo"}}}
        assert client.post("/api/v1/jobs", json=hostile).status_code == 422  # not a 500


# -- the spec is resolved once, on the server, and the worker runs that file --------------------------------


def test_the_server_resolves_the_spec_once_and_hands_the_worker_that_file():
    from tuneforge.jobs import folder as fmt
    from tuneforge.platform.db import Job
    from tuneforge.platform.supervisor import launch_for

    fake_model("tiny")
    with make_client() as client:
        assert upload(client, "memo.json", json.dumps(MEMO), name="memo").status_code == 201
        body = {"template": "sft-lora", "model": "tiny", "datasets": ["memo"], "overrides": {"name": "r"}}
        job = client.post("/api/v1/jobs", json=body).json()
        ctx = client.app.state.platform
        root = ctx.jobs_dir / job["id"]
        stored = job["spec"]
        assert stored["output_dir"] == str(root) and stored["lora"]["r"] == 8  # defaults filled
        assert stored["data"]["train"][0]["path"] == client.get("/api/v1/datasets/memo").json()["id"]
        assert yaml.safe_load((root / fmt.SPEC_FILE).read_text()) == stored
        with ctx.store.reading() as s:
            row = s.get(Job, job["id"])
        argv = launch_for(ctx, row).argv
        assert argv[3:] == ["train", str(root / fmt.SPEC_FILE), "--resolved"]
        assert sorted(p.name for p in root.iterdir()) == [fmt.EVENTS_FILE, fmt.SPEC_FILE]

        # A job queued by an older server (no spec.yaml, no output_dir in its row) gets the file at launch.
        (root / fmt.SPEC_FILE).unlink()
        row.spec = {k: v for k, v in stored.items() if k != "output_dir"}
        launch_for(ctx, row)
        assert yaml.safe_load((root / fmt.SPEC_FILE).read_text()) == stored

        client.post(f"/api/v1/jobs/{job['id']}/cancel")
        retried = client.post(f"/api/v1/jobs/{job['id']}/retry").json()
        assert retried["spec"]["output_dir"] == str(ctx.jobs_dir / retried["id"])


def test_the_worker_runs_a_resolved_spec_as_it_is(capsys, tmp_path, monkeypatch):
    from tuneforge.spec import dump_spec, parse_spec
    from tuneforge.train import run

    runs = []

    def fake_run(spec, output, **kw):
        runs.append((spec, output, kw))
        return run.RunResult(tmp_path, {})

    monkeypatch.setattr(run, "run_training", fake_run)
    root = tmp_path / "job"
    root.mkdir()
    (root / "d.json").write_text("[]")  # a file beside it that a user's spec would mean
    spec = parse_spec({"model": "m", "data": {"train": "d.json"}, "output_dir": str(root)})
    (root / "spec.yaml").write_text(dump_spec(spec))
    code, _, err = run_cli(capsys, "train", root / "spec.yaml", "--resolved", "--set", "resume_from=step-2")
    assert code == 0, err
    ran, output, kw = runs[-1]
    assert ran.data.train[0].path == "d.json" and ran.resume_from == "step-2" and output is None
    assert kw["spec_written"] is True
    # A standalone run resolves the user's YAML as before: paths beside the file, spec.yaml written.
    code, _, err = run_cli(capsys, "train", root / "spec.yaml", "-o", tmp_path / "other")
    assert code == 0, err
    assert runs[-1][0].data.train[0].path == str(root / "d.json") and runs[-1][2]["spec_written"] is False

    other = tmp_path / "copy.yaml"
    other.write_text(dump_spec(spec))
    code, _, err = run_cli(capsys, "train", other, "--resolved")
    assert code == 2 and "is not the spec.yaml of its output_dir" in err
    code, _, err = run_cli(capsys, "train", root / "spec.yaml", "--resolved", "-o", tmp_path / "x")
    assert code == 2 and "give no --output" in err


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_an_infinite_or_nan_hyperparameter_is_refused(value):
    # passed gt=0 (inf) and reached the trainer and the job row's JSON (which PostgreSQL refuses)
    from tuneforge.errors import ConfigError
    from tuneforge.spec import parse_spec, set_dotted

    for key in ("train.learning_rate", "train.max_grad_norm", "lora.dropout", "train.warmup_ratio"):
        data = {"model": "m", "data": {"train": ["d.json"]}}
        set_dotted(data, f"{key}={value}")
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            parse_spec(data)
