"""The errors tuneforge raises. Edges (CLI, HTTP) turn them into exit codes or responses."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class TuneforgeError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


class ConfigError(TuneforgeError):
    """A spec, option or setting that cannot work as given."""

    exit_code = 2


@dataclass
class Problem:
    """One thing wrong with an input, with where it is and how to fix it. ``record`` counts from 1, as
    ``line`` does; ``code`` and ``params`` say the message in any language (data/problem_codes.py)."""

    message: str
    file: str | None = None
    line: int | None = None
    record: int | None = None
    field: str | None = None
    code: str | None = None
    params: dict | None = None

    def where(self) -> str:
        parts = [self.file or ""]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.record is not None:
            parts.append(f"record {self.record}")
        if self.field:
            parts.append(f"field {self.field!r}")
        return " ".join(p for p in parts if p).strip()

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class DataError(TuneforgeError):
    """Input data that cannot be used; carries every problem found, not only the first."""

    exit_code = 2

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = problems or []
        if self.problems and message.endswith(":"):
            message = message + " " + str(self.problems[0])
        super().__init__(message)


class NotFoundError(TuneforgeError):
    exit_code = 2


class ConflictError(TuneforgeError):
    exit_code = 1


class ForbiddenError(TuneforgeError):
    """Turned off on this server, or not allowed to this caller: the fix is a setting or another token."""

    exit_code = 1


class ResourceError(TuneforgeError):
    """Out of memory, no GPU, no disk: the fix is on the machine or in the sizes asked for."""

    exit_code = 1


class Cancelled(TuneforgeError):
    """A training run was asked to stop (SIGTERM, or its Ray driver's request) and saved a checkpoint."""

    exit_code = 143


class MissingExtraError(ConfigError):
    """An optional dependency is missing; says which extra installs it."""

    def __init__(self, module: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package {module!r}, which is not installed. "
            f"Install it with: pip install 'tuneforge[{extra}]'"
        )


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise an error naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra, purpose) from exc
