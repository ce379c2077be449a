"""Process-wide settings, read from ``TUNEFORGE_*`` environment variables."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from tuneforge.errors import ConfigError
from tuneforge.names import Name

ENV_PREFIX = "TUNEFORGE_"


class QueueQuota(BaseModel):
    """What the running jobs of one queue may hold together; a limit left out is no limit."""

    model_config = ConfigDict(extra="forbid")
    cpus: int | None = Field(default=None, ge=1, description="Worker processes (a job's resources.workers).")
    gpus: int | None = Field(default=None, ge=0, description="GPUs (a job's resources.gpus).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    home: Path = Field(
        default=Path("~/.tuneforge"),
        description="Where datasets, models, jobs and caches live.",
    )
    default_model: str = Field(
        default="smollm2-135m-instruct", description="Base model used when none is named."
    )
    # Bounds on what a dataset may make tuneforge do. They hold for files uploaded over HTTP too, so
    # each is checked while reading (bytes as read, never as a file or an archive declares them).
    max_dataset_mb: int = Field(
        default=2048,
        gt=0,
        description="Largest dataset accepted, in MiB, counted as its bytes are read (unpacked zip "
        "members and decoded Parquet columns included).",
    )
    max_records: int = Field(
        default=2_000_000, gt=0, description="Most records one dataset may hold (all files together)."
    )
    max_record_mb: float = Field(
        default=8.0,
        gt=0,
        le=1024,
        description="Longest single record, in MiB: a JSON Lines line, a CSV row, a JSON array element.",
    )
    max_depth: int = Field(
        default=64, gt=0, le=500, description="Deepest nesting of lists and objects inside one record."
    )
    max_number_digits: int = Field(
        default=100, gt=0, le=4300, description="Most digits of one integer in a JSON file."
    )
    max_files: int = Field(
        default=10_000, gt=0, description="Most files in a dataset folder or entries in a dataset zip."
    )
    max_problems: int = Field(
        default=1000, gt=0, description="Reading stops after this many problems (all are reported)."
    )
    validate_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Worker processes counting tokens when a dataset of over 2,048 records is validated "
        "with a tokenizer: 0 is one per core (at most 4), 1 counts in the reading process alone.",
    )
    answer_cache_mb: int = Field(
        default=64,
        ge=0,
        description="Memory, in MiB, for the control plane's encoded job answers, kept per version of each "
        "job's row so a list page does not encode its rows again (about 6 KB a job; 0 keeps none).",
    )

    allow_command_jobs: bool = Field(
        default=True,
        description="Whether the server runs jobs of kind `command` (a user's own script, run with the "
        "server's user rights). false: creating one answers 403.",
    )
    isolate_command_mounts: bool = Field(
        default=True,
        description="Whether a command job runs in a mount namespace of its own where its stored datasets "
        "and models are mounted read-only. false (or no namespaces on this machine): links and cleared "
        "write bits only, which root ignores.",
    )
    queues: dict[Name, QueueQuota] = Field(  # a job names its queue by the name rule: so must the server
        default_factory=dict,
        description='Job queues as JSON: {"gpu": {"gpus": 2}, "cpu": {"cpus": 4}}. A job names one with '
        "resources.queue (--queue) and starts only while its queue's running jobs stay within the quota; "
        "inside a queue, higher priority first, then older. Jobs without a queue are held by no quota.",
    )

    # Where jobs and serving replicas run (docs/ray.md). A Ray cluster must use token authentication.
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="local: worker processes on this machine. ray: every job and replica is a job on the "
        "Ray cluster at TUNEFORGE_RAY_ADDRESS (needs the `ray` extra and TUNEFORGE_HOME on a volume every "
        "node mounts at the same path).",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster's job API: its dashboard's http://HOST:8265. The token is Ray's own "
        "RAY_AUTH_TOKEN or the file RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token).",
    )
    ray_allow_unauthenticated: bool = Field(
        default=False,
        description="Start the Ray executor even when the cluster accepts job submissions without a token: "
        "anyone who reaches its dashboard port can then run code on every node.",
    )

    @property
    def root(self) -> Path:
        return self.home.expanduser()

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"


def env_name(field: str) -> str:
    """The environment variable that sets ``field``: what an error about a limit should name."""
    return ENV_PREFIX + field.upper()


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # One line per bad variable, naming it as the user wrote it; never pydantic's traceback.
        lines = []
        for err in exc.errors():
            name = env_name(str(err["loc"][0])) if err.get("loc") else "a TUNEFORGE_ setting"
            lines.append(f"{name}={err.get('input')!r}: {err['msg'].lower()}.")
        raise ConfigError("bad setting " + " ".join(lines)) from None
    except SettingsError as exc:
        # A JSON setting (TUNEFORGE_QUEUES) that is not JSON: pydantic-settings names the field only, in
        # its own words, and the JSON error is its cause.
        field = re.search(r'field "([^"]+)"', str(exc))
        name = env_name(field.group(1)) if field else "a TUNEFORGE_ setting"
        raise ConfigError(
            f"bad setting {name}: not valid JSON ({exc.__cause__ or exc}). Quote names with double quotes, "
            f'e.g. {name}=\'{{"gpu": {{"gpus": 2}}}}\'.'
        ) from None
