"""Exports from the API (issue 21): a registered fine-tune → GGUF + Modelfile or a merged folder, run by a
worker the executor starts, polled for progress, downloaded, the merged one registered as a new version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_lora_adapter
from tests.support.platformhelp import make_client, store_model, wait_for


def registered_adapter(api, tiny_llama, tmp_path, name: str = "ft") -> None:
    """A LoRA adapter on the stored model ``tiny``, registered as ``name@1`` (as a job's final/ would be)."""
    from tuneforge.platform.db import RegisteredModel

    store_model(tiny_llama, "tiny")
    adapter = make_lora_adapter(tiny_llama, tmp_path / "adapter", seed=3)
    with api.app.state.platform.store.session() as s:
        s.add(
            RegisteredModel(
                id="rm-1", name=name, version=1, base_model="tiny", checkpoint="final", path=str(adapter)
            )
        )


def finished(api, name: str, export_id: str) -> dict:
    def ended():
        got = api.get(f"/api/v1/models/{name}/exports/{export_id}").json()
        return got if got["state"] != "running" else None

    return wait_for(ended, timeout=300, what=f"export {export_id}")


def test_gguf_export_runs_in_a_worker_reports_progress_and_downloads(tiny_llama, tmp_path):
    with make_client() as api:
        registered_adapter(api, tiny_llama, tmp_path)
        r = api.post("/api/v1/models/ft/exports", json={"format": "gguf", "quant": "q8_0"})
        assert r.status_code == 202, r.text
        export = r.json()
        assert export["state"] == "running" and export["model"] == "ft@1" and export["quant"] == "q8_0"
        # one export per model at a time: the second asks to wait for the first
        again = api.post("/api/v1/models/ft/exports", json={"format": "gguf"})
        assert again.status_code == 409 and export["id"] in again.json()["detail"]
        done = finished(api, "ft", export["id"])
        assert done["state"] == "succeeded", done
        assert done["stage"] == "write"  # the worker's progress lines reached the status
        assert sorted(f["path"] for f in done["files"]) == ["Modelfile", "ft-v1.q8_0.gguf"]
        base = f"/api/v1/models/ft/exports/{export['id']}"
        gguf = api.get(f"{base}/download")
        assert gguf.status_code == 200 and gguf.content[:4] == b"GGUF"
        assert "ft-v1.q8_0.gguf" in gguf.headers["content-disposition"]
        modelfile = api.get(f"{base}/download", params={"file": "Modelfile"})
        assert modelfile.status_code == 200 and modelfile.text.startswith("FROM ./ft-v1.q8_0.gguf")
        assert api.get(f"{base}/download", params={"file": "../progress.jsonl"}).status_code == 404
        assert [e["id"] for e in api.get("/api/v1/models/ft/exports").json()["data"]] == [export["id"]]
        assert api.get(f"/api/v1/models/other/exports/{export['id']}").status_code == 404
        # the route is an admin route like the other model routes
        token = api.headers.pop("Authorization")
        assert api.get(base).status_code == 401
        api.headers["Authorization"] = token


def test_merged_export_registers_the_next_version(tiny_llama, tmp_path):
    with make_client() as api:
        registered_adapter(api, tiny_llama, tmp_path)
        body = {"format": "merged", "version": 1, "register_version": True}
        r = api.post("/api/v1/models/ft/exports", json=body)
        assert r.status_code == 202, r.text
        done = finished(api, "ft", r.json()["id"])
        assert done["state"] == "succeeded", done
        assert done["registered"] == "ft@2"
        assert "config.json" in [f["path"] for f in done["files"]]
        row = api.get("/api/v1/models/registered/ft@2").json()
        assert row["path"].endswith("/ft-v1") and row["lineage"]["merged_from"] == "ft@1"
        assert row["base_model"] == "tiny"
        # the merged folder has no GGUF: a download names its file
        no_default = api.get(f"/api/v1/models/ft/exports/{done['id']}/download")
        assert no_default.status_code == 422 and "config.json" in no_default.json()["detail"]


def test_export_errors_are_the_apis_and_a_failed_export_leaves_nothing(tiny_models, tmp_path):
    with make_client(max_exports=1) as api:
        store_model(tiny_models["gpt2"], "g")
        assert api.post("/api/v1/models/nope/exports", json={"format": "gguf"}).status_code == 404
        merged = api.post("/api/v1/models/g/exports", json={"format": "merged"})
        assert merged.status_code == 422 and "not a LoRA adapter" in merged.json()["detail"]
        bad = api.post("/api/v1/models/g/exports", json={"format": "gguf", "quant": "q2"})
        assert bad.status_code == 422
        assert api.post("/api/v1/models/g/exports", json={"format": "zip"}).status_code == 422
        # a version past the database's integer is refused before it reaches a query
        huge = api.post("/api/v1/models/g/exports", json={"format": "gguf", "version": 2**40})
        assert huge.status_code == 422
        started = api.post("/api/v1/models/g/exports", json={"format": "gguf"})
        assert started.status_code == 202
        store_model(tiny_models["llama"], "l")
        busy = api.post("/api/v1/models/l/exports", json={"format": "gguf"})  # past max_exports
        assert busy.status_code == 503 and "g" in busy.json()["detail"]
        done = finished(api, "g", started.json()["id"])
        # the worker's own message: which architectures GGUF export supports
        assert done["state"] == "failed" and "llama and qwen2" in done["error"], done
        assert done["files"] == []
        root = api.app.state.platform.home / "exports" / done["id"]
        assert [p.name for p in root.iterdir() if p.is_dir()] == []
        assert api.get(f"/api/v1/models/g/exports/{done['id']}/download").status_code == 409


def test_a_version_in_the_name_past_the_databases_integer_is_a_404():
    # the body's version is bounded; ft@<20 digits> in the path reached the query (OverflowError, a 500)
    with make_client() as api:
        for ref in ("ft@99999999999999999999", "ft@\u00b2"):  # "²".isdigit() holds, int() refuses it
            assert api.post(f"/api/v1/models/{ref}/exports", json={"format": "gguf"}).status_code == 404
            assert api.get(f"/api/v1/models/registered/{ref}").status_code == 404
            assert api.delete(f"/api/v1/models/registered/{ref}").status_code == 404


@pytest.fixture
def tiny_llama(tiny_models):
    return tiny_models["llama"]


def test_cli_remote_export_follows_the_server_and_downloads(tiny_llama, tmp_path, capsys, monkeypatch):
    from tests.platform.test_platform_server import Server
    from tests.support.clihelp import run_cli
    from tuneforge.settings import get_settings

    store_model(tiny_llama, "tiny")
    srv = Server(get_settings().root)
    srv.start()
    try:
        monkeypatch.setenv("TUNEFORGE_URL", srv.url)
        monkeypatch.setenv("TUNEFORGE_TOKEN", srv.token)
        out = tmp_path / "gguf"
        args = ["models", "export", "tiny", "--remote", "--format", "gguf", "--quant", "f16", "-o", out]
        code, stdout, err = run_cli(capsys, *args, "--json")
        assert code == 0, err
        assert json.loads(stdout)["state"] == "succeeded"
        assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "tiny.f16.gguf"]
        assert (out / "tiny.f16.gguf").read_bytes()[:4] == b"GGUF"
        # the server's refusal is the CLI's one line and exit code: a stored model has nothing to merge
        code, _, err = run_cli(capsys, "models", "export", "tiny", "--remote", "-o", tmp_path / "m")
        assert code == 2 and "not a LoRA adapter" in err and not (tmp_path / "m").exists()
    finally:
        srv.stop()


def test_a_restarted_server_lists_finished_exports_fails_the_interrupted_and_keeps_the_newest(monkeypatch):
    """Exports used to live only in memory: after a restart their files (GGUFs as large as the model)
    stayed on disk, unlisted and never removed. Now their records come back: a finished export is listed
    and downloads again, one that was running is failed without its partial output, a folder without a
    record is removed, and only the newest KEEP_FINISHED finished exports keep their files."""
    from tuneforge.platform import exports
    from tuneforge.settings import get_settings

    monkeypatch.setattr(exports, "KEEP_FINISHED", 3)  # the failed one counts
    root = get_settings().root / "exports"

    def planted(n: int, state: str) -> exports.Export:
        e = exports.Export(f"exp-{n:012x}", "ft@1", "gguf", "f16", root / f"exp-{n:012x}", False, None,
                           state=state, started_at=1000.0 + n)  # fmt: skip
        e.output.mkdir(parents=True)
        (e.output / "ft-v1.f16.gguf").write_bytes(b"GGUF" + bytes(8))
        e.save()
        return e

    oldest, older, newest = planted(1, "succeeded"), planted(2, "succeeded"), planted(3, "succeeded")
    interrupted = planted(4, "running")
    stray = root / "exp-00000000ffff"
    stray.mkdir()  # a crash between the folder and its record
    with make_client() as api:
        listed = api.get("/api/v1/models/ft/exports").json()["data"]
        assert [e["id"] for e in listed] == [interrupted.id, newest.id, older.id]
        assert listed[0]["state"] == "failed" and "server stopped during the export" in listed[0]["error"]
        assert not interrupted.output.exists() and not stray.exists() and not oldest.folder.exists()
        got = api.get(f"/api/v1/models/ft/exports/{newest.id}/download")
        assert got.status_code == 200 and got.content.startswith(b"GGUF")
        assert api.get(f"/api/v1/models/ft/exports/{oldest.id}").status_code == 404


def test_hostile_export_records_neither_crash_start_up_nor_reach_outside_exports(tmp_path):
    """Records are files anyone with the home can write: a wrong type (a string started_at broke
    start-up's sort), a model whose output is the folder itself (its removal took the record's folder and
    the save after it crashed start-up), a record naming another id, and an exp-… symlink to a folder
    outside (listed, served, and its output deleted) must leave start-up working and outside files alone."""
    from tuneforge.platform import exports
    from tuneforge.settings import get_settings

    root = get_settings().root / "exports"

    def planted(n: int, **changes) -> Path:
        folder = root / f"exp-{n:012x}"
        e = exports.Export(folder.name, "ft@1", "gguf", "f16", folder, False, None, started_at=1000.0 + n)
        e.output.mkdir(parents=True)
        (e.output / "ft-v1.f16.gguf").write_bytes(b"GGUF")
        e.save()
        record = json.loads((folder / exports.RECORD).read_text())
        (folder / exports.RECORD).write_text(json.dumps({**record, **changes}))
        return folder

    good = planted(1, state="succeeded")
    bad = [planted(2, started_at="yesterday"), planted(3, model="..", state="running"),
           planted(4, model=5), planted(5, folder="/etc")]  # fmt: skip
    (bad[-1] / exports.RECORD).write_bytes(b"\xff\xfe" + bytes(10))  # and one not UTF-8
    other = planted(6, id="exp-000000000001", state="succeeded")  # claims the good one's id
    outside = tmp_path / "outside"
    (outside / "ft-v1").mkdir(parents=True)
    (outside / "ft-v1" / "secret.txt").write_text("keep")
    (outside / exports.RECORD).write_text(json.dumps({**json.loads((good / exports.RECORD).read_text()),
                                                      "state": "running"}))  # fmt: skip
    link = root / "exp-00000000abcd"
    link.symlink_to(outside)
    with make_client() as api:
        listed = api.get("/api/v1/models/ft/exports").json()["data"]
        assert sorted(e["id"] for e in listed) == [good.name, other.name]
        assert (outside / "ft-v1" / "secret.txt").read_text() == "keep" and link.is_symlink()
        assert api.get(f"/api/v1/models/ft/exports/{link.name}/download?file=secret.txt").status_code == 404
        assert not any(folder.exists() for folder in bad)
        gone = api.get(f"/api/v1/models/ft/exports/{bad[0].name}")  # it said a restart forgets exports
        assert gone.status_code == 404 and "newest 50 finished exports" in gone.text, gone.text
