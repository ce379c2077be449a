"""The control plane's API on SQLite and PostgreSQL: auth, tokens, datasets, templates, jobs, migrations."""

from __future__ import annotations

import json
import os
import re
import stat
import time

import pytest

from tests.conftest import MEMO, write
from tests.support.platformhelp import fake_model, make_client, upload
from tuneforge.spec import TEMPLATES

pytestmark = pytest.mark.usefixtures("database_url")


@pytest.fixture
def api():
    with make_client() as client:
        yield client


def _routes(client):
    """Every (method, path) of the OpenAPI document with path parameters filled in."""
    for path, ops in client.app.openapi()["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in ops:
            yield method.upper(), path, concrete


GATEWAY = {"/v1/models", "/v1/models/{model}", "/v1/chat/completions", "/v1/completions"}


def test_auth_matrix_over_every_route(api):
    admin = api.headers["Authorization"]
    scoped = api.post("/api/v1/tokens", json={"name": "d", "scope": "deployment:chat"}).json()["token"]
    revoked = api.post("/api/v1/tokens", json={"name": "r"}).json()
    expired = api.post("/api/v1/tokens", json={"name": "e", "expires": "1s"}).json()["token"]
    assert api.delete(f"/api/v1/tokens/{revoked['id']}").status_code == 200
    time.sleep(1.1)
    wrong = admin[:-4] + ("AAAA" if not admin.endswith("AAAA") else "BBBB")
    bad = {
        "none": None,
        "garbage": "Bearer nonsense",
        "not bearer": admin.replace("Bearer ", "Basic "),
        "wrong secret": wrong,
        "revoked": f"Bearer {revoked['token']}",
        "expired": f"Bearer {expired}",
    }
    checked = 0
    for method, path, concrete in _routes(api):
        if path == "/healthz" or path.startswith("/v2/") or path in GATEWAY:
            continue  # the inference gateway has its own matrix (tests/platform/test_deployments.py)
        if path == "/api/v1/session" and method != "GET":
            continue  # signing in takes the token in its body; signing out is never refused
        assert path.startswith(("/api/v1/", "/v1/")), path
        for label, header in bad.items():
            headers = {"Authorization": header} if header else {}
            api.headers.pop("Authorization")
            r = api.request(method, concrete, headers=headers, json={})
            api.headers["Authorization"] = admin
            assert r.status_code == 401, (label, method, path, r.status_code, r.text)
            body = r.json()
            # The same answer whatever exists: nothing about the route, the token or the resource.
            assert "x" not in json.dumps(body).replace("invalid", "").replace("exist", ""), body
        api.headers.pop("Authorization")
        r = api.request(method, concrete, headers={"Authorization": f"Bearer {scoped}"}, json={})
        api.headers["Authorization"] = admin
        assert r.status_code == 403, (method, path, r.status_code)
        r = api.request(method, concrete, json={})
        assert r.status_code not in (401, 403), (method, path, r.text)
        checked += 1
    assert checked >= 30


def test_tokens_hashed_listed_without_secret_revoked_on_next_request(api):
    home = api.app.state.platform.home
    mode = stat.S_IMODE(os.stat(home / "admin.token").st_mode)
    assert mode == 0o600
    made = api.post("/api/v1/tokens", json={"name": "ci", "scope": "admin", "expires": "30d"})
    assert made.status_code == 201
    token = made.json()["token"]
    assert token.startswith("tf_")
    listed = api.get("/api/v1/tokens").json()["data"]
    assert {t["name"] for t in listed} == {"admin", "ci"}
    # the secret may itself hold "_": split once past the id
    assert token not in json.dumps(listed) and token.split("_", 2)[2] not in json.dumps(listed)
    from tuneforge.platform.db import Token

    with api.app.state.platform.store.session() as s:
        assert all(token.split("_", 2)[2] not in row.secret_hash for row in s.query(Token))
    mine = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/jobs", headers=mine).status_code == 200
    api.delete(f"/api/v1/tokens/{made.json()['id']}")
    assert api.get("/api/v1/jobs", headers=mine).status_code == 401
    bad = api.post("/api/v1/tokens", json={"name": "x", "scope": "root"})
    assert bad.status_code == 422 and "deployment:NAME" in bad.json()["detail"]
    assert api.post("/api/v1/tokens", json={"name": "x", "expires": "soon"}).status_code == 422


def test_curl_form_typed_json_body_is_json_with_a_bearer_header_only(api):
    """`curl -d '{...}'` labels the body a form; with a bearer header the API reads it as JSON.

    A cookie (what a forged cross-site form carries) or no credential at all (the sign-in) still needs a
    JSON type, so the CSRF guards are as they were.
    """
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    made = api.post("/api/v1/tokens", content=json.dumps({"name": "curl"}), headers=form)
    assert made.status_code == 201 and made.json()["name"] == "curl"
    # A real form body is still no JSON: the body reader's 400 that says so, not a 500.
    bad = api.post("/api/v1/tokens", content="name=curl", headers=form)
    assert bad.status_code == 400 and "JSON" in bad.json()["detail"], bad.text

    admin = api.headers.pop("Authorization").removeprefix("Bearer ")
    signed_in = api.post("/api/v1/session", content=json.dumps({"token": admin}), headers=form)
    assert signed_in.status_code == 422 and "set-cookie" not in signed_in.headers
    assert api.post("/api/v1/session", json={"token": admin}).status_code == 201
    csrf = {"X-Requested-With": "tuneforge-console"}
    cookie_form = api.post("/api/v1/tokens", content=json.dumps({"name": "c"}), headers={**form, **csrf})
    assert cookie_form.status_code == 422
    assert api.post("/api/v1/tokens", json={"name": "c"}, headers=csrf).status_code == 201


def test_registered_models_have_a_list_route(api):
    from tuneforge.platform.db import RegisteredModel

    assert api.get("/api/v1/models/registered").json() == {"data": []}
    with api.app.state.platform.store.session() as s:
        for version in (2, 1):
            s.add(
                RegisteredModel(
                    id=f"r{version}",
                    name="demo",
                    version=version,
                    base_model="tiny",
                    checkpoint="final",
                    path="/x",
                    lineage={},
                )
            )
    listed = api.get("/api/v1/models/registered")
    assert listed.status_code == 200
    assert [m["ref"] for m in listed.json()["data"]] == ["demo@1", "demo@2"]
    assert api.get("/api/v1/models").json()["registered"] == listed.json()["data"]


def test_upload_appears_in_cli_store_and_cli_dataset_appears_in_api(api, tmp_path):
    from tuneforge.data.load import load_records
    from tuneforge.data.store import list_datasets, store_dataset

    r = upload(api, "memo.json", json.dumps(MEMO), name="memo")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["state"] == "ready" and ds["format"] == "alpaca" and ds["records"] == 4
    assert ds["stats"]["per_role"]["assistant"]["count"] == 4
    assert [d["id"] for d in list_datasets()] == [ds["id"]]  # what `tuneforge datasets list` reads

    other = write(
        tmp_path / "chat.jsonl",
        "\n".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"hi {i}"},
                        {"role": "assistant", "content": "hello"},
                    ]
                }
            )
            for i in range(3)
        ),
    )
    meta, _ = store_dataset(load_records(other), "chat")  # as `tuneforge datasets create` does
    names = {d["name"]: d for d in api.get("/api/v1/datasets").json()["data"]}
    assert set(names) == {"memo", "chat"} and names["chat"]["id"] == meta["id"]
    assert names["chat"]["bytes"] == other.stat().st_size  # was 0 for a dataset stored by the CLI
    assert api.get("/api/v1/datasets/chat").json()["format"] == "openai"
    preview = api.get(f"/api/v1/datasets/{ds['id']}/preview", params={"n": 2}).json()["data"]
    assert preview[0]["messages"][-1] == {"role": "assistant", "content": "banana seven"}
    files = api.get(f"/api/v1/datasets/{ds['id']}/files").json()["data"]
    assert files == [{"path": "memo.json", "bytes": len(json.dumps(MEMO))}]
    assert api.get(f"/api/v1/datasets/{ds['id']}/files/memo.json").json() == MEMO
    # Removed with the CLI → gone from the API on the next list.
    from tuneforge.data.store import remove_dataset

    remove_dataset("chat")
    assert [d["name"] for d in api.get("/api/v1/datasets").json()["data"]] == ["memo"]


def test_json_body_and_multiple_files_and_map(api):
    r = api.post("/api/v1/datasets", json={"name": "j", "records": MEMO})
    assert r.status_code == 201 and r.json()["records"] == 4
    rows = [{"content": "问题", "summary": "回答"}, {"content": "q2", "summary": "a2"}]
    r = api.post(
        "/api/v1/datasets",
        files=[("files", ("a.jsonl", json.dumps(rows[0]))), ("files", ("b.jsonl", json.dumps(rows[1])))],
        data={"map": "prompt=content,response=summary", "name": "adv"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["records"] == 2 and r.json()["mapping"] == {"prompt": "content", "response": "summary"}


BAD = {
    "broken.jsonl": '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n',
    "missing.json": json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]),
    "wrongtype.jsonl": json.dumps({"messages": [{"role": "user", "content": 5}]}) + "\n",
    "empty.json": "[]",
    "binary.jsonl": b"\xff\xfe\x00garbage",
    "mixed.jsonl": json.dumps({"text": "a"}) + "\n" + json.dumps({"instruction": "b", "output": "c"}) + "\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_datasets_are_422_with_locations_and_nothing_stored(api, name):
    r = upload(api, name, BAD[name])
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert problems and all(p["message"] for p in problems)
    if name in ("broken.jsonl", "wrongtype.jsonl"):
        assert any(p.get("line") for p in problems), problems
    if name == "missing.json":  # the second record, counted from 1 as lines are; its code and params
        missing = [p for p in problems if p.get("record") == 2 and p.get("field") == "output"]
        assert missing and missing[0]["code"] == "missing_field", problems
        assert missing[0]["params"] == {"key": "output", "format": "alpaca"}, problems
    home = api.app.state.platform.home
    assert list((home / "datasets").iterdir()) == []  # no dataset, no temporary upload left
    assert api.get("/api/v1/datasets").json()["data"] == []


def test_data_package_samples_broken_file_lists_every_problem(api):
    from importlib.resources import files

    broken = (files("tuneforge") / "samples" / "broken_sample.jsonl").read_bytes()
    r = upload(api, "broken_sample.jsonl", broken)
    assert r.status_code == 422
    assert len(r.json()["problems"]) >= 2


def test_size_limit_is_413(api):
    api.app.state.platform.max_upload_bytes = 1000
    r = upload(api, "big.json", json.dumps(MEMO * 20))
    assert r.status_code == 413
    assert list((api.app.state.platform.home / "datasets").iterdir()) == []


def test_large_upload_validates_in_background(api):
    api.app.state.platform.background_validation_bytes = 10
    r = upload(api, "memo.json", json.dumps(MEMO), name="bg")
    assert r.status_code == 202 and r.json()["state"] == "validating"
    pending = r.json()["id"]
    for _ in range(100):
        got = api.get(f"/api/v1/datasets/{pending}").json()
        if got["state"] != "validating":
            break
        time.sleep(0.05)
    assert got["state"] == "ready" and got["id"].startswith("ds-") and got["records"] == 4
    r = upload(api, "bad.json", BAD["missing.json"], name="bad")
    pending = r.json()["id"]
    for _ in range(100):
        got = api.get(f"/api/v1/datasets/{pending}").json()
        if got["state"] != "validating":
            break
        time.sleep(0.05)
    assert got["state"] == "invalid" and got["problems"][0]["record"] == 2  # from 1, as lines are
    assert got["problems"][0]["code"] == "missing_field"  # kept in the stored report
    assert [d["name"] for d in api.get("/api/v1/datasets", params={"state": "ready"}).json()["data"]] == [
        "bg"
    ]


@pytest.mark.parametrize(
    "path",
    ["../dataset.json", "..%2Fdataset.json", "%2e%2e/%2e%2e/admin.token", "/etc/passwd", "files/../../x"],
)
def test_path_traversal_in_file_routes_is_404(api, path):
    ds = upload(api, "memo.json", json.dumps(MEMO)).json()
    fake_model()
    job = api.post(
        "/api/v1/jobs", json={"template": "sft-lora", "model": "tiny", "datasets": [ds["id"]]}
    ).json()
    for base in (f"/api/v1/datasets/{ds['id']}/files/", f"/api/v1/jobs/{job['id']}/files/"):
        r = api.get(base + path)
        assert r.status_code == 404, (base + path, r.status_code, r.text[:200])
        assert "root" not in r.text and "token" not in r.text.replace("admin.token", "")


def test_templates_carry_schema_defaults_and_help(api):
    data = api.get("/api/v1/templates").json()["data"]
    names = [t["name"] for t in data]
    assert names == list(TEMPLATES) and {"sft-lora", "dpo-lora", "kto-lora", "rm-lora", "grpo-lora"} <= set(
        names
    )
    full = api.get("/api/v1/templates/sft-full").json()
    assert full["finetuning"] == "full" and full["default_learning_rate"] == 2e-5
    hp = full["schema"]["$defs"]["HyperParams"]["properties"]
    assert hp["learning_rate"]["description"] and hp["batch_size"]["default"] == 4
    assert api.get("/api/v1/templates/nope").status_code == 404


def test_job_creation_validates_before_queueing(api):
    fake_model()
    ds = upload(api, "memo.json", json.dumps(MEMO), name="memo").json()
    ok = api.post(
        "/api/v1/jobs",
        json={
            "template": "sft-lora",
            "model": "tiny",
            "datasets": ["memo"],
            "overrides": {"train.learning_rate": 1e-4},
            "priority": 3,
        },
    )
    assert ok.status_code == 201, ok.text
    job = ok.json()
    assert job["state"] == "queued" and job["spec"]["data"]["train"][0]["path"] == ds["id"]
    assert job["spec"]["train"]["learning_rate"] == 1e-4 and job["priority"] == 3
    bad = api.post(
        "/api/v1/jobs",
        json={
            "template": "sft-lora",
            "model": "tiny",
            "datasets": ["memo"],
            "overrides": {"train.learning_rate": -1, "lora.r": "x"},
        },
    )
    assert bad.status_code == 422
    locs = {".".join(map(str, p["loc"])) for p in bad.json()["problems"]}
    assert {"spec.train.learning_rate", "spec.lora.r"} <= locs
    r = api.post("/api/v1/jobs", json={"template": "sft-lora", "model": "nope", "datasets": ["nothere"]})
    locs = {".".join(map(str, p["loc"])) for p in r.json()["problems"]}
    assert r.status_code == 422 and locs == {"spec.model", "spec.data.train.0.path"}
    r = api.post(
        "/api/v1/jobs",
        json={"template": "sft-lora", "model": "tiny", "datasets": ["memo"], "resources": {"gpus": 2}},
    )
    assert r.status_code == 422 and "this machine has 0" in r.text
    r = api.post("/api/v1/jobs", json={"spec": {"model": "tiny", "data": {"train": "/etc/passwd"}}})
    assert r.status_code == 422 and "upload it first" in r.text
    r = api.post("/api/v1/jobs", json={"template": "nope", "model": "tiny", "datasets": ["memo"]})
    assert r.status_code == 422
    # A queued job holds its dataset.
    assert api.delete("/api/v1/datasets/memo").status_code == 409
    assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 409
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    assert api.delete("/api/v1/datasets/memo").status_code == 200
    assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 200
    assert api.get(f"/api/v1/jobs/{job['id']}").status_code == 404


def test_job_list_filters_and_paginates_newest_first(api):
    fake_model()
    upload(api, "memo.json", json.dumps(MEMO), name="memo")
    ids = [
        api.post("/api/v1/jobs", json={"template": "sft-lora", "model": "tiny", "datasets": ["memo"]}).json()[
            "id"
        ]
        for _ in range(5)
    ]
    api.post(f"/api/v1/jobs/{ids[1]}/cancel")
    page = api.get("/api/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["data"]]
    while page["next"]:
        page = api.get("/api/v1/jobs", params={"limit": 2, "before": page["next"]}).json()
        seen += [j["id"] for j in page["data"]]
    assert seen == ids[::-1]
    cancelled = api.get("/api/v1/jobs", params={"state": "cancelled"}).json()["data"]
    assert [j["id"] for j in cancelled] == [ids[1]]
    assert api.get("/api/v1/jobs", params={"state": "bogus"}).status_code == 422


def test_openai_shape_errors_on_v1(api):
    r = api.get("/v1/fine_tuning/jobs/ftjob-nothere")
    assert r.status_code == 404 and r.json()["error"]["message"]
    api.headers.pop("Authorization")
    r = api.get("/v1/files")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_migrations_keep_rows_from_the_first_revision(database_url, tmp_path):
    from sqlalchemy import text

    from tuneforge.platform import migrate
    from tuneforge.platform.app import database_url as url_of
    from tuneforge.platform.db import Store
    from tuneforge.settings import get_settings

    settings = get_settings()
    settings.root.mkdir(parents=True, exist_ok=True)
    store = Store(url_of(settings))
    migrate.upgrade(store.engine, "0001")
    assert migrate.current(store.engine) == "0001"
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, state, spec, priority, gpus, restart_policy, max_retries, "
                "attempt, folder, cancel_requested, step, latest_metrics, created_at) "
                "VALUES ('job-old', 'train', 'succeeded', '{\"model\": \"m\"}', 0, 0, 'never', 0, 1, "
                "'/x', false, 7, '{}', 1.0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO tokens (id, name, scope, secret_hash, created_at) "
                "VALUES ('t1', 'old', 'admin', 'h', 1.0)"
            )
        )
    store.dispose()
    with make_client() as client:  # the app migrates to head on start
        from alembic.script import ScriptDirectory

        from tuneforge.platform.migrate import current

        engine = client.app.state.platform.store.engine
        head = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()
        assert current(engine) == head and head != "0001"
        job = client.get("/api/v1/jobs/job-old").json()
        assert job["state"] == "succeeded" and job["progress"]["step"] == 7 and job["spec"] == {"model": "m"}
        assert "old" in {t["name"] for t in client.get("/api/v1/tokens").json()["data"]}


def test_healthz_and_prometheus_metrics(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    fake_model()
    upload(api, "memo.json", json.dumps(MEMO), name="memo")
    api.post("/api/v1/jobs", json={"template": "sft-lora", "model": "tiny", "datasets": ["memo"]})
    api.get("/api/v1/jobs")
    text = api.get("/metrics").text
    assert 'tuneforge_jobs{state="queued"} 1.0' in text
    assert "tuneforge_queue_length 1.0" in text
    assert re.search(
        r'tuneforge_http_requests_total\{method="GET",route="/api/v1/jobs",status="200"\} 1\.0', text
    )
    assert 'tuneforge_http_request_seconds_count{method="POST",route="/api/v1/jobs"}' in text
