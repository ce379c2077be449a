"""What a killed process leaves and what many uploads start (issue 16 item 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import MEMO
from tests.support.platformhelp import make_client, upload, wait_for


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_up_removes_temporary_folders_of_dead_processes_only(tmp_path):
    from tuneforge.jobs.executor import process_start_ticks
    from tuneforge.settings import get_settings

    settings = get_settings()
    datasets, models = settings.datasets_dir, settings.models_dir
    dead, me = _dead_pid(), os.getpid()
    mine = process_start_ticks(me)
    folders = {
        "killed upload": datasets / f".upload-{dead}-123-abc",
        "killed dataset write": datasets / f".tmp-{dead}-123-def",
        "killed model write": models / f".tmp-{dead}-123-ghi",
        "recycled pid": datasets / f".upload-{me}-{mine + 1}-jkl",
        "old unowned upload": datasets / ".upload-mno",
        "live upload": datasets / f".upload-{me}-{mine}-pqr",
        "recent unowned": datasets / ".tmp-stu",
        "a stored dataset": datasets / "ds-0123456789ab",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "records.jsonl").write_text("{}\n" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(folders["old unowned upload"], (two_hours_ago, two_hours_ago))
    with make_client(supervise=True):
        pass
    gone = {what for what, folder in folders.items() if not folder.exists()}
    assert gone == {
        "killed upload",
        "killed dataset write",
        "killed model write",
        "recycled pid",
        "old unowned upload",
    }


def test_an_upload_folder_names_its_process():
    from tuneforge.jobs.staging import _in_use
    from tuneforge.platform.catalog import Upload
    from tuneforge.settings import get_settings

    up = Upload(get_settings().datasets_dir)
    try:
        assert up.dir.name.startswith(f".upload-{os.getpid()}-") and _in_use(up.dir)
    finally:
        up.close()


def test_token_reports_run_a_few_at_a_time(tmp_path, monkeypatch):
    """8 uploads started 8 report workers at once (~260 MB each): now 2 run, the others wait."""
    runs = tmp_path / "runs"
    runs.mkdir()
    fake = tmp_path / "fake-python"
    fake.write_text(
        "#!/bin/sh\n"
        f"d={runs}\n"
        "touch $d/running.$$\n"
        "ls $d | grep -c running >> $d/counts\n"
        "sleep 0.4\n"
        "rm $d/running.$$\n"
        "echo x >> $d/ended\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    with make_client(token_stats=True) as api:
        monkeypatch.setattr(sys, "executable", str(fake))
        for i in range(8):
            records = [{**r, "output": f"{r['output']} {i}"} for r in MEMO]
            assert upload(api, f"d{i}.json", json.dumps(records), name=f"d{i}").status_code == 201
        wait_for(lambda: (runs / "ended").exists() and len((runs / "ended").read_text().split()) == 8, 60)
    counts = [int(c) for c in (runs / "counts").read_text().split()]
    assert len(counts) == 8 and max(counts) <= 2, counts
