"""Request bodies of the control plane API (responses are plain dicts shaped by the route modules)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobCreate(Body):
    """Either a whole JobSpec (``spec``) or a template + model + dataset(s) with overrides."""

    spec: dict[str, Any] | None = Field(default=None, description="A whole JobSpec (as `tuneforge train`).")
    template: str | None = Field(default=None, description="sft-lora, sft-qlora, sft-full, dpo-lora, …")
    model: str | None = Field(default=None, description="A model on the server (`GET /api/v1/models`).")
    datasets: list[str] | None = Field(default=None, description="Stored dataset ids or names to train on.")
    validation_dataset: str | None = Field(default=None, description="A stored dataset to evaluate on.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Dotted keys of the JobSpec, e.g. {'train.learning_rate': 1e-4}."
    )
    resources: dict[str, Any] | None = Field(default=None, description="{gpus, nodes, strategy}.")
    restart_policy: Literal["never", "on-failure"] = Field(
        default="never", description="on-failure: restart from the latest checkpoint."
    )
    max_retries: int = Field(default=0, ge=0, le=20, description="Restarts allowed by on-failure.")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher starts first; then older first.")


class ResumeBody(Body):
    checkpoint: str | None = Field(default=None, description="step-N, or empty for the latest.")


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    scope: str = Field(default="admin", description="admin or deployment:NAME.")
    expires: str | None = Field(default=None, description="30d, 12h, 90m, 2w; empty: never.")


class ModelPull(Body):
    name: str = Field(description="A catalog name (smollm2-135m-instruct) or a hub id.")


class ModelImport(Body):
    path: str = Field(description="An HF folder or .gguf file on the server's disk.")
    name: str | None = None


class ModelRegister(Body):
    job: str = Field(description="The job whose output to register.")
    checkpoint: str | None = Field(default=None, description="step-N; empty: the job's final output.")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class EvaluationCreate(Body):
    model: str = Field(description="A registered model (name or name@version) or a base model.")
    dataset: str = Field(description="A stored chat dataset id or name.")
    compare_base: bool = Field(default=False, description="Also evaluate the base model.")
    max_samples: int | None = Field(default=None, ge=1, le=100_000)
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
