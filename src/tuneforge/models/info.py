"""What tuneforge records about a model (``model.json``), read from files without loading weights."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
MODEL_FILE = "model.json"


def weight_files(folder: Path) -> list[Path]:
    files = []
    for pattern in WEIGHT_PATTERNS:
        files += [p for p in folder.glob(pattern) if not p.name.startswith("training_args")]
    return sorted(files)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def safetensors_parameters(path: Path) -> int:
    """Count parameters from a safetensors header (8-byte length + JSON), without reading tensors."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def count_parameters(folder: Path) -> int | None:
    files = weight_files(folder)
    if files and all(f.suffix == ".safetensors" for f in files):
        return sum(safetensors_parameters(f) for f in files)
    return None


def describe_folder(
    folder: Path, name: str, source: str, tokenizer=None, kind: str = "base", extra: dict | None = None
) -> dict:
    """The record ``model.json`` holds for an HF folder."""
    config = json.loads((folder / "config.json").read_text())
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    eos_ids = gen.get("eos_token_id", config.get("eos_token_id"))
    eos_ids = eos_ids if isinstance(eos_ids, list) else ([eos_ids] if eos_ids is not None else [])
    info = {
        "id": name,
        "name": name,
        "kind": kind,
        "architecture": (config.get("architectures") or [config.get("model_type")])[0],
        "model_type": config.get("model_type"),
        "parameters": count_parameters(folder),
        "context_length": config.get("max_position_embeddings")
        or config.get("n_positions")
        or config.get("seq_length"),
        "dtype": config.get("dtype") or config.get("torch_dtype"),
        "source": source,
        "files": {f.name: sha256_file(f) for f in weight_files(folder)},
    }
    if tokenizer is not None:
        info["chat_template"] = bool(getattr(tokenizer, "chat_template", None))
        info["eos_token"] = tokenizer.eos_token
        info["stop_tokens"] = [tokenizer.convert_ids_to_tokens(i) for i in eos_ids] or (
            [tokenizer.eos_token] if tokenizer.eos_token else []
        )
    info.update(extra or {})
    return info


def read_info(folder: Path) -> dict:
    return json.loads((folder / MODEL_FILE).read_text())


def write_info(folder: Path, info: dict) -> None:
    (folder / MODEL_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))
