"""Models under ``$TUNEFORGE_HOME/models/<id>/``: find, list, remove; staged writes."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

from tuneforge import names
from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.jobs.staging import staged_folder
from tuneforge.settings import get_settings

from .info import MODEL_FILE, read_info

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def models_root() -> Path:
    return get_settings().models_dir


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 100).")
    return name


def model_dir(name: str) -> Path:
    return models_root() / check_name(name)


def stored_model_dir(name: str) -> Path | None:
    """The folder of the pulled or imported model ``name``, or None: the one answer to "is this a stored
    model?". A name the store would refuse (a path, ``..``) never is one."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return None
    folder = models_root() / name
    return folder if (folder / MODEL_FILE).is_file() else None


def list_models() -> list[dict]:
    root = models_root()
    if not root.exists():
        return []
    return [read_info(p.parent) for p in sorted(root.glob(f"*/{MODEL_FILE}"))]


def resolve_model(ref: str | Path) -> Path:
    """A model folder from a stored model's name or a path to an HF folder."""
    p = Path(ref).expanduser()
    if p.is_dir() and (p / "config.json").exists():
        return p
    if isinstance(ref, str) and NAME_RE.match(ref):
        if folder := stored_model_dir(ref):
            return folder
        from .catalog import CATALOG

        if ref in CATALOG:
            raise NotFoundError(f"model {ref!r} is not pulled yet: run `tuneforge models pull {ref}`.")
    raise NotFoundError(
        f"no model {str(ref)!r}: name a pulled or imported model (`tuneforge models list`) "
        "or an HF model folder."
    )


def staged_model(name: str) -> contextlib.AbstractContextManager[Path]:
    """A temporary folder that becomes ``models/<name>`` only if the block succeeds."""
    return staged_folder(model_dir(names.check_name(name, "model")), replace=True)


def remove_model(name: str) -> None:
    folder = model_dir(name)
    if not (folder / MODEL_FILE).exists():
        raise NotFoundError(f"no model {name!r}; see `tuneforge models list`.")
    shutil.rmtree(folder)
