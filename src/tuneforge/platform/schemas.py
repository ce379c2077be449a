"""Request bodies of the control plane API, and the error of one that does not validate."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from tuneforge.errors import ConfigError
from tuneforge.names import Name


class SpecProblems(ConfigError):
    """A job request that does not validate; ``problems`` carry field paths (→ 422)."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems))


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobCreate(Body):
    """Either a whole JobSpec (``spec``) or a template + model + dataset(s) with overrides."""

    kind: Literal["train"] = Field(default="train", description="train (this body) or command.")
    spec: dict[str, Any] | None = Field(default=None, description="A whole JobSpec (as `tuneforge train`).")
    template: str | None = Field(default=None, description="sft-lora, sft-qlora, sft-full, dpo-lora, …")
    model: str | None = Field(default=None, description="A model on the server (`GET /api/v1/models`).")
    datasets: list[str] | None = Field(default=None, description="Stored dataset ids or names to train on.")
    validation_dataset: str | None = Field(default=None, description="A stored dataset to evaluate on.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Dotted keys of the JobSpec, e.g. {'train.learning_rate': 1e-4}."
    )
    resources: dict[str, Any] | None = Field(
        default=None, description="{gpus, nodes, strategy, workers, queue}."
    )
    restart_policy: Literal["never", "on-failure"] = Field(
        default="never", description="on-failure: restart from the latest checkpoint."
    )
    max_retries: int = Field(default=0, ge=0, le=20, description="Restarts allowed by on-failure.")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher starts first; then older first.")


class Mount(Body):
    name: str = Field(min_length=1, max_length=200, description="A stored dataset (id or name) or model.")
    path: str = Field(min_length=1, max_length=500, description="Where it appears, relative to the code.")


class CommandJobCreate(Body):
    """A user's own command, run in a job folder with its code, datasets and models linked in."""

    kind: Literal["command"]
    name: Name = Field(description="The job's name.")
    command: list[str] = Field(min_length=1, max_length=1000, description="argv; no shell is involved.")
    code: str | None = Field(
        default=None, pattern=r"^code-[0-9a-f]{12}$", description="An id from POST /api/v1/jobs/code."
    )
    datasets: list[Mount] = Field(default_factory=list, max_length=100)
    models: list[Mount] = Field(default_factory=list, max_length=20)
    output: str = Field(default="output", max_length=500, description="Where output/ appears in the code.")
    env: dict[str, str] = Field(default_factory=dict, max_length=200)
    gpus: int = Field(default=0, ge=0, le=64)
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Copies of the command, ranks 0…N-1, with MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, "
        "LOCAL_RANK set as torchrun sets them; each rank's output in logs/rank-N.txt.",
    )
    queue: Name | None = Field(default=None, description="The queue it waits in (TUNEFORGE_QUEUES).")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher starts first; then older first.")
    restart_policy: Literal["never", "on-failure"] = "never"
    max_retries: int = Field(default=0, ge=0, le=20)
    time_limit_s: float | None = Field(default=None, gt=0, le=30 * 86400, description="Per attempt.")
    labels: dict[str, str] = Field(default_factory=dict, max_length=50)


def _job_kind(value: Any) -> str:
    kind = value.get("kind", "train") if isinstance(value, dict) else getattr(value, "kind", "train")
    return kind if kind in ("train", "command") else "train"


AnyJobCreate = Annotated[
    Annotated[JobCreate, Tag("train")] | Annotated[CommandJobCreate, Tag("command")],
    Discriminator(_job_kind),
]


class ResumeBody(Body):
    checkpoint: str | None = Field(default=None, description="step-N, or empty for the latest.")


class TokenCreate(Body):
    name: Name = Field(description="A label to tell tokens apart.")
    scope: str = Field(default="admin", description="admin or deployment:NAME.")
    expires: str | None = Field(default=None, description="30d, 12h, 90m, 2w; empty: never.")


WAIT_HELP = "false: answer 202 at once with a pull to poll at /api/v1/models/pulls/{id}."


class ModelPull(Body):
    name: str = Field(description="A catalog name (smollm2-135m-instruct) or a hub id.")
    wait: bool = Field(default=True, description=WAIT_HELP)


class ModelImport(Body):
    path: str = Field(description="An HF folder or .gguf file on the server's disk.")
    name: Name | None = Field(default=None, description="The stored model's name; default: the file's.")
    wait: bool = Field(default=True, description=WAIT_HELP)


class ModelRegister(Body):
    job: str = Field(description="The job whose output to register.")
    checkpoint: str | None = Field(
        default=None,
        description="step-N or final; empty: the best checkpoint train.select marked, else the final output.",
    )
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    path: str | None = Field(
        default=None, max_length=500, description="A folder of the job, e.g. output/checkpoint-3000."
    )
    base: str | None = Field(default=None, max_length=200, description="The stored base model (with path).")


class EvaluationCreate(Body):
    model: str = Field(description="A registered model (name or name@version) or a base model.")
    dataset: str = Field(description="A stored chat dataset id or name.")
    compare_base: bool = Field(default=False, description="Also evaluate the base model.")
    max_samples: int | None = Field(default=None, ge=1, le=100_000)
    max_new_tokens: int = Field(default=64, ge=1, le=4096)


# -- the OpenAI fine-tuning API (/v1/files, /v1/fine_tuning/jobs): OpenAI's shapes --------------------------


class Hyper(BaseModel):
    model_config = ConfigDict(extra="allow")
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    beta: float | Literal["auto"] = "auto"


class FineTuneCreate(BaseModel):
    model_config = ConfigDict(extra="allow")  # the SDK adds fields over time (integrations, metadata, …)
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = None
    hyperparameters: Hyper | None = None
    method: dict[str, Any] | None = None
    tuneforge: dict[str, Any] | None = Field(
        default=None, description="tuneforge's own extension: {'overrides': {dotted JobSpec keys: values}}."
    )


class Answer(BaseModel):
    """An answer's shape: a key the code adds without declaring it here fails the tests, not the client."""

    model_config = ConfigDict(extra="forbid")


class OpenAIFile(Answer):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"]
    status_details: str | None


class OpenAIFileList(Answer):
    object: Literal["list"]
    data: list[OpenAIFile]
    has_more: bool


class OpenAIFileDeleted(Answer):
    id: str
    object: Literal["file"]
    deleted: bool


class FineTuningError(Answer):
    code: str
    message: str
    param: str | None


class FineTuningJob(Answer):
    id: str
    object: Literal["fine_tuning.job"]
    created_at: int
    finished_at: int | None
    model: str | None
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    validation_file: str | None
    training_file: str | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any] | None
    trained_tokens: int | float | None
    error: FineTuningError | None
    seed: int | None
    user_provided_suffix: str | None
    estimated_finish: int | None
    integrations: list[Any]
    metadata: dict[str, str] | None


class FineTuningJobList(Answer):
    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool


class FineTuningEvent(Answer):
    id: str
    object: Literal["fine_tuning.job.event"]
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None


class FineTuningEventList(Answer):
    object: Literal["list"]
    data: list[FineTuningEvent]
    has_more: bool


class FineTuningCheckpoint(Answer):
    id: str
    object: Literal["fine_tuning.job.checkpoint"]
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class FineTuningCheckpointList(Answer):
    object: Literal["list"]
    data: list[FineTuningCheckpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None


# -- the control plane's answers (/api/v1/…) ----------------------------------------------------------------


class JobProgress(Answer):
    step: int
    max_steps: int | None


class JobOut(Answer):
    """A job as ``GET /api/v1/jobs/{id}`` answers it (``jobs.job_dict``)."""

    id: str
    kind: str = Field(description="train, eval or command.")
    name: str | None
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    priority: int
    gpus: int
    workers: int = Field(description="Processes (ranks); each writes logs/rank-N.txt when above 1.")
    queue: str | None = Field(description="The queue it waits in (TUNEFORGE_QUEUES); null: none.")
    restart_policy: str
    max_retries: int
    attempt: int
    resume_from: str | None
    progress: JobProgress
    latest_metrics: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    error: dict[str, Any] | None = Field(description="{message, exit_code, log_tail} of a failed job.")
    spec: dict[str, Any] = Field(description="The resolved JobSpec (train), evaluation or command request.")
    labels: dict[str, str]
    best_checkpoint: dict[str, Any] | None = Field(
        default=None, description="{checkpoint, step, metric, mode, value} when train.select marked one."
    )


class JobList(Answer):
    data: list[JobOut]
    next: str | None = Field(description="The cursor of the next page (``before=``); null on the last.")


class JobDeleted(Answer):
    id: str
    deleted: bool
