"""`tuneforge models export --remote`: the server exports (POST /api/v1/models/{name}/exports), this
process follows its progress and downloads the files into the output folder."""

from __future__ import annotations

import time
from pathlib import Path

from tuneforge.errors import ConfigError, ConflictError, ResourceError
from tuneforge.jobs.staging import staged_folder

from .client import Client
from .common import stage_progress

FORMATS = {"gguf": "gguf", "safetensors": "merged"}  # `--format` → the API's name


def export_remote(model: str, output: Path, fmt: str, quant: str | None, register: bool, bar: bool) -> dict:
    """The finished export's record; ``output`` holds its files, written only when all arrived."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose safetensors or gguf.")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConflictError(f"{output} exists and is not empty; choose another --output or remove it.")
    name, _, version = model.partition("@")
    if version and not version.isdigit():
        raise ConfigError(f"{model!r}: a version is a number (name@3)")
    body = {
        "format": FORMATS[fmt],
        "quant": quant,
        "version": int(version) if version else None,
        "register_version": register,
    }
    client = Client()
    base = f"/api/v1/models/{name}/exports"
    export = client.post(base, json=body)
    with stage_progress(bar) as progress:
        while export["state"] == "running":
            if export.get("stage"):
                progress(export["stage"], export.get("done"), export.get("total"))
            time.sleep(1.0)
            export = client.get(f"{base}/{export['id']}")
    if export["state"] != "succeeded":
        raise ResourceError(f"the export failed on the server: {export.get('error')}")
    with staged_folder(output) as tmp:
        for f in export["files"]:
            dest = tmp / f["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download(f"{base}/{export['id']}/download", dest, params={"file": f["path"]})
    return export
