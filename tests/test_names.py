"""Names and ids (issue 16 items 6, 9, 11): one name rule for every noun, and a lookup by id by id only."""

from __future__ import annotations

import json

import pytest

from tests.conftest import MEMO, write
from tests.support.platformhelp import fake_model, make_client, upload

BAD_NAMES = {
    "nul": "a\x00b",
    "long": "x" * 10_000,
    "rtl-override": "invoice\u202etxt.exe",
    "zero-width": "me\u200bmo",
    "line-separator": "a\u2028b",
    "dataset-id": "ds-0123456789ab",
    "job-id": "job-0123456789ab",
    "token-id": "0123456789abcdef",
    "blank": "   ",
    "padded": " memo",
}


@pytest.fixture
def api():
    with make_client() as client:
        yield client


def _two_datasets(api) -> tuple[dict, dict]:
    """Two stored datasets (older, newer) ordered by id: the first sorts before the second on disk."""
    a = upload(api, "a.json", json.dumps(MEMO), name="first").json()
    b = upload(api, "b.json", json.dumps(MEMO[:2]), name="second").json()
    return tuple(sorted((a, b), key=lambda d: d["id"]))


def _rename_behind_the_api(api, ds_id: str, name: str) -> None:
    """A dataset named so before the name rule existed (a legacy row and its dataset.json)."""
    from tuneforge.platform.db import Dataset

    folder = api.app.state.platform.settings.datasets_dir / ds_id
    meta = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**meta, "name": name}))
    with api.app.state.platform.store.session() as s:
        row = s.get(Dataset, ds_id)
        row.name, row.meta = name, {**row.meta, "name": name}


def test_a_legacy_name_shaped_like_an_id_never_stands_in_for_that_id(api):
    """Preview of X showed Y's records and DELETE X deleted Y when Y was named X's id."""
    from tuneforge.data.store import find_dataset, read_any_dataset

    shadow, victim = _two_datasets(api)  # the shadow sorts first, as a scan by id-or-name meets it
    _rename_behind_the_api(api, shadow["id"], victim["id"])

    preview = api.get(f"/api/v1/datasets/{victim['id']}/preview", params={"n": 100}).json()
    assert len(preview["data"]) == victim["records"]
    assert find_dataset(victim["id"]).name == victim["id"]  # the CLI and the training worker
    assert len(read_any_dataset(victim["id"])[0]) == victim["records"]
    assert api.delete(f"/api/v1/datasets/{victim['id']}").json()["id"] == victim["id"]
    assert api.get(f"/api/v1/datasets/{shadow['id']}").json()["records"] == shadow["records"]
    assert (
        find_dataset(shadow["id"]).exists()
        and not (find_dataset(shadow["id"]).parent / victim["id"]).exists()
    )
    # An id-shaped reference that is no dataset's id is not found, even when a name matches it.
    assert api.get(f"/api/v1/datasets/{victim['id']}").status_code == 404


@pytest.mark.parametrize("kind", sorted(BAD_NAMES))
def test_every_noun_refuses_a_bad_name(api, kind, tmp_path):
    bad = BAD_NAMES[kind]
    r = api.post("/api/v1/datasets", json={"name": bad, "records": MEMO})
    assert r.status_code == 422 and "dataset name" in r.json()["detail"], r.text
    r = upload(api, "memo.json", json.dumps(MEMO), name=bad)
    assert r.status_code == 422, r.text
    assert api.post("/api/v1/tokens", json={"name": bad}).status_code == 422
    fake_model("tiny")
    upload(api, "memo.json", json.dumps(MEMO), name="memo")
    spec = {"spec": {"name": bad, "model": "tiny", "data": {"train": [{"path": "memo"}]}}}
    assert api.post("/api/v1/jobs", json=spec).status_code == 422
    command = {"kind": "command", "name": bad, "command": ["true"]}
    assert api.post("/api/v1/jobs", json=command).status_code == 422
    model_import = {"path": str(tmp_path), "name": bad}
    assert api.post("/api/v1/models/import", json=model_import).status_code == 422
    assert api.get("/api/v1/tokens").json()["data"][-1]["name"] != bad
    assert [d["name"] for d in api.get("/api/v1/datasets").json()["data"]] == ["memo"]
    assert api.get("/api/v1/jobs").json()["data"] == []


def test_id_shaped_names_are_refused_for_models_deployments_and_registered_models(api):
    from tuneforge.errors import ConfigError
    from tuneforge.models.store import staged_model
    from tuneforge.platform import deployments, registry

    with pytest.raises(ConfigError, match="looks like an id"), staged_model("dep-0123456789ab"):
        pass
    ctx = api.app.state.platform
    fake_model("tiny")
    with pytest.raises(ConfigError, match="looks like an id"):
        deployments.create(ctx, "tiny", name="dep-0123456789ab")
    row = deployments.create(ctx, "tiny", name="smol")  # and a deployment is found by its id too
    assert deployments.get(ctx, row.id).name == "smol"
    with pytest.raises(ConfigError, match="looks like an id"):
        registry.register(ctx, "job-nothere", None, "rm-0123456789ab")


def test_token_revoke_by_id_never_revokes_a_token_named_like_it(api):
    from tuneforge.platform.db import Token

    victim = api.post("/api/v1/tokens", json={"name": "victim"}).json()
    shadow = api.post("/api/v1/tokens", json={"name": "shadow"}).json()
    with api.app.state.platform.store.session() as s:
        s.get(Token, shadow["id"]).name = victim["id"]  # a legacy row
    api.delete(f"/api/v1/tokens/{victim['id']}")
    tokens = {t["id"]: t for t in api.get("/api/v1/tokens").json()["data"]}
    assert tokens[victim["id"]]["revoked_at"] and not tokens[shadow["id"]]["revoked_at"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": 123},
        {"name": ["x"]},
        {"name": {"a": 1}},
        {"format": ["x"]},
        {"map": {"prompt": 1}},
        {"name": "\ud800"},
    ],
    ids=["int-name", "list-name", "object-name", "list-format", "int-map", "surrogate-name"],
)
def test_json_upload_fields_of_the_wrong_type_are_422(api, body):
    raw = json.dumps({**body, "records": MEMO})  # \ud800 as an escape: JSON allows it, UTF-8 does not
    r = api.post("/api/v1/datasets", content=raw, headers={"Content-Type": "application/json"})
    # a lone surrogate is refused by the body reader itself, for every route (test_http_bodies)
    assert r.status_code == (400 if body.get("name") == "\ud800" else 422), r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]
    assert list(api.app.state.platform.settings.datasets_dir.iterdir()) == []


def test_upload_errors_name_the_file_as_sent_not_the_servers_temporary_path(api):
    r = upload(api, "broken.jsonl", '{"instruction": "a", "output": "b"}\n{not json\n')
    assert r.status_code == 422, r.text
    text = r.text
    assert "broken.jsonl" in text
    assert ".upload-" not in text and str(api.app.state.platform.home) not in text, text


def test_cli_refuses_a_bad_dataset_name(tmp_path, capsys):
    from tests.support.clihelp import run_cli
    from tuneforge.data.store import list_datasets

    path = write(tmp_path / "memo.json", json.dumps(MEMO))
    code, out, err = run_cli(capsys, "datasets", "create", path, "--name", "memo\u202e")
    assert code == 2 and "dataset name" in out + err, out + err
    code, out, err = run_cli(capsys, "datasets", "create", path, "--name", "ds-0123456789ab")
    assert code == 2 and "looks like an id" in out + err, out + err
    assert list_datasets() == []


@pytest.mark.parametrize(
    "filename,expected",
    [("ds-0123456789ab.jsonl", "ds-0123456789ab-upload"), ("n" * 150 + ".jsonl", "n" * 100)],
    ids=["id-shaped", "long"],
)
def test_a_name_taken_from_the_file_is_made_usable_not_refused(api, filename, expected):
    """Only a name the user typed is refused: OpenAI clients upload whatever file names they have."""
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    chat = json.dumps({"messages": turns})
    r = api.post("/v1/files", files={"file": (filename, chat + "\n")}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    r = upload(api, filename.replace(".jsonl", ".json"), json.dumps(MEMO))
    assert r.status_code == 201, r.text
    assert r.json()["name"] == expected


@pytest.mark.parametrize(
    "sent,kept",
    [("a" * 5 + "." + "b" * 200, "aaaaa.bbbbbbbbb"), ("n" * 150 + ".jsonl", "n" * 105 + ".jsonl")],
)
def test_a_long_upload_file_name_keeps_its_suffix_and_is_never_hidden(sent, kept):
    from tuneforge.platform.catalog import safe_filename

    assert safe_filename(sent, 1) == kept  # a long suffix once made ".bbbbbbbbb", a hidden file
