"""Process-wide settings, read from ``TUNEFORGE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore")

    home: Path = Field(
        default=Path("~/.tuneforge"),
        description="Where datasets, models, jobs and caches live.",
    )
    max_dataset_mb: int = Field(
        default=2048, description="Largest dataset (file, folder or unpacked zip) accepted, in MiB."
    )
    default_model: str = Field(
        default="smollm2-135m-instruct", description="Base model used when none is named."
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


@lru_cache
def get_settings() -> Settings:
    return Settings()
