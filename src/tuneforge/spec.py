"""JobSpec: the one description of a training run (YAML for `tuneforge train`, REST body, web form), and the
one path from a user's input to it: the template, ``--set`` values and dotted overrides, validation with
hints, the file.

Long because: the schema is most of it (every field with the description the CLI help, the
OpenAPI document and the web form show); the input path sits beside it so that every caller uses it.
"""

from __future__ import annotations

import copy
import difflib
import re
import typing
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneforge.errors import ConfigError
from tuneforge.names import Name


class Strict(BaseModel):
    # no inf/nan: ``train.learning_rate: .inf`` (or JSON's Infinity) passed gt=0 and reached the trainer
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DatasetRef(Strict):
    path: str = Field(description="A dataset file/folder/zip, or a stored dataset's id or name.")
    format: str | None = Field(
        default=None, description="Force a format (alpaca, sharegpt, openai, …); detected when empty."
    )
    map: dict[str, str] = Field(
        default_factory=dict, description="Column mapping, e.g. {prompt: content, response: summary}."
    )
    max_samples: int | None = Field(default=None, ge=1, description="Use at most this many records.")


class EvalOverlapCheck(Strict):
    """How much of the evaluation set may also be in the training set (data/dedup.py measures it)."""

    max_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Warn (an eval_overlap event) when more than this share of the evaluation records is "
        "also in the training set, exactly or as a near-duplicate.",
    )
    jaccard: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Word-shingle Jaccard similarity that makes a near-duplicate.",
    )
    strict: bool = Field(default=False, description="Refuse the job before it starts instead of warning.")


class DataSpec(Strict):
    train: list[DatasetRef] = Field(description="Training datasets (concatenated).")
    validation: DatasetRef | None = Field(default=None, description="A separate validation set.")
    eval_overlap: EvalOverlapCheck = Field(
        default_factory=EvalOverlapCheck, description="The check of the evaluation set against training."
    )
    val_fraction: float = Field(
        default=0.0,
        ge=0.0,
        lt=0.5,
        description="Hold out this fraction of training records for evaluation "
        "when no validation set is given.",
    )
    max_len: int = Field(
        default=1024,
        ge=8,
        description="Cutoff length in tokens; longer sequences are "
        "truncated (pretraining text is split instead).",
    )
    truncation: Literal["keep_head", "keep_answers"] = Field(
        default="keep_head",
        description="How chat examples longer than max_len are cut. keep_head: the first max_len tokens "
        "(an answer past them is dropped); keep_answers: LLaMA-Factory's rule, turn by turn a long prompt "
        "is shortened so that its answer is kept (each prompt and answer tokenized alone, as there).",
    )
    packing: bool = Field(
        default=True,
        description="Concatenate each batch's examples into one row with "
        "attention kept inside each example: no padding.",
    )
    mask: Literal["assistant", "last", "all"] = Field(
        default="assistant",
        description="Which tokens of chat data carry loss: all assistant turns, the last, or all.",
    )
    chat_template: str = Field(
        default="auto",
        description="auto (the model's own), a named template "
        "(chatml, llama3, alpaca, chatglm3, plain), llamafactory:NAME (LLaMA-Factory's template NAME, "
        "reproduced: default, alpaca, vicuna, chatml, qwen, qwen3_nothink, smollm, smollm2, yi, llama3, "
        "mistral, empty) "
        "or Jinja.",
    )

    @field_validator("train", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        if isinstance(v, str | dict):
            v = [v]
        return [{"path": x} if isinstance(x, str) else x for x in v]

    @field_validator("validation", mode="before")
    @classmethod
    def _path_or_ref(cls, v):
        return {"path": v} if isinstance(v, str) else v


class LoraSpec(Strict):
    r: int = Field(default=8, ge=1, description="LoRA rank.")
    alpha: int = Field(default=16, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="Module names to adapt, or all-linear."
    )
    plus_ratio: float | None = Field(
        default=None,
        ge=1.0,
        description="LoRA+: the B matrices learn at this ratio × the learning rate (16 is typical); "
        "off when empty.",
    )
    use_dora: bool = Field(
        default=False,
        description="DoRA: learn a magnitude vector per output beside the LoRA direction; "
        "still merges into plain weights.",
    )
    use_rslora: bool = Field(
        default=False, description="rsLoRA: scale the adapter by alpha / sqrt(r) instead of alpha / r."
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full and saved with the adapter, e.g. [embed_tokens, lm_head] "
        "for new tokens.",
    )


class SelectSpec(Strict):
    metric: str = Field(
        default="eval_loss",
        pattern=r"^eval_[a-z0-9_]{1,60}$",
        description="The eval metric that picks the best checkpoint (an eval_* figure in metrics.jsonl).",
    )
    mode: Literal["min", "max"] = Field(default="min", description="min: lower is better; max: higher.")


class HyperParams(Strict):
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Peak learning rate; default 2e-4 for LoRA/QLoRA (5e-5 for DPO, KTO, ORPO, SimPO and "
        "GRPO), 2e-5 full (5e-6 for those).",
    )
    epochs: float = Field(default=3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(default=4, ge=1, description="Examples per device per step.")
    grad_accum: int = Field(default=1, ge=1, description="Gradient accumulation steps.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning rate schedule."
    )
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5, description="Fraction of steps to warm up.")
    warmup_steps: int | None = Field(
        default=None, ge=0, description="Warm up for this many steps (overrides warmup_ratio)."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, description="Weight decay.")
    optimizer: Literal[
        "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adamw_8bit", "paged_adamw_8bit"
    ] = Field(
        default="adamw_torch",
        description="adamw_torch; adamw_torch_fused (one kernel per step, where the device has it); "
        "adafactor (factored second moments, less memory); sgd; adamw_8bit / paged_adamw_8bit "
        "(bitsandbytes, CUDA only).",
    )
    neftune_alpha: float | None = Field(
        default=None,
        gt=0,
        description="NEFTune: uniform noise of this scale on the input embeddings while training "
        "(5 is typical); never during evaluation. Off when empty.",
    )
    max_grad_norm: float = Field(default=1.0, ge=0.0, description="Gradient clipping (0 = off).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 mixed precision on GPUs that have it and on CPUs with AMX (bf16 base, fp32 "
        "adapter weights and optimizer), fp32 elsewhere.",
    )
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for memory.")
    seed: int = Field(default=42, description="Seed for weights init, shuffling and dropout.")
    logging_steps: int = Field(default=5, ge=1, description="Log metrics every N steps.")
    eval_steps: int | None = Field(
        default=None,
        ge=1,
        description="Evaluate every N steps (default: each epoch when there is eval data).",
    )
    save_steps: int | None = Field(
        default=None, ge=1, description="Checkpoint every N steps (default: each epoch)."
    )
    save_total_limit: int = Field(default=2, ge=1, description="Checkpoints to keep.")
    select: SelectSpec | None = Field(
        default=None,
        description="Mark the best checkpoint by an eval metric (kept past save_total_limit; what "
        "`models register JOB` takes by default). Needs evaluation data; save at the eval steps.",
    )
    dpo_beta: float = Field(
        default=0.1,
        gt=0,
        description="Beta of the preference losses (LLaMA-Factory's pref_beta): DPO's and KTO's KL anchor, "
        "ORPO's odds-ratio weight (lambda), SimPO's reward scale.",
    )
    kto_desirable_weight: float = Field(
        default=1.0, gt=0, description="KTO: loss weight of desirable (label: true) examples."
    )
    kto_undesirable_weight: float = Field(
        default=1.0,
        gt=0,
        description="KTO: loss weight of undesirable (label: false) examples; raise the rarer side's weight "
        "so that weight × count is about equal.",
    )
    simpo_gamma: float = Field(
        default=0.5, ge=0, description="SimPO: target reward margin between chosen and rejected answers."
    )
    cpo_alpha: float = Field(
        default=0.0,
        ge=0,
        description="SimPO: weight of an added SFT (NLL) loss on the chosen answers; 0 is SimPO as published "
        "and as LLaMA-Factory trains it.",
    )
    report_to: list[Literal["tensorboard", "mlflow", "wandb", "swanlab"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Experiment trackers that get a copy of metrics.jsonl, the spec and the final model "
        "(each set up by its own environment variables: MLFLOW_TRACKING_URI, WANDB_PROJECT, WANDB_MODE, "
        "SWANLAB_MODE, …). TensorBoard files are always written into the job folder.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, v):
        # LLaMA-Factory's spellings: one name, "a,b", "none"; "all" would depend on what is installed.
        if v is None:
            return ["tensorboard"]
        if isinstance(v, str):
            v = [part.strip() for part in v.split(",") if part.strip()]
        if isinstance(v, list):
            if "all" in v:
                raise ValueError("name the trackers instead of 'all': tensorboard, mlflow, wandb, swanlab")
            v = list(dict.fromkeys(x for x in v if x != "none")) or ["tensorboard"]
        return v


class Resources(Strict):
    gpus: int = Field(default=0, ge=0, description="GPUs per node (0: CPU or one GPU if present).")
    nodes: int = Field(default=1, ge=1, description="Machines.")
    strategy: Literal["auto", "ddp", "fsdp", "zero2", "zero3"] = Field(
        default="auto", description="Distribution strategy when more than one GPU."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Training processes per node (DDP ranks). With gpus 0 they train on the CPU and share "
        "its cores over gloo; with GPUs there is one per GPU (workers is 1 or resources.gpus).",
    )
    queue: Name | None = Field(
        default=None, description="The server's queue the job waits in (its quota and order); none: default."
    )
    max_failures: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Under Ray Train (a multi-process run inside a Ray job): how many times a lost worker "
        "restarts the whole group from the latest checkpoint before the run fails.",
    )
    # Reservations on a cluster (the Ray executor's entrypoint_num_cpus / entrypoint_memory).
    cpus: float = Field(default=1, gt=0, le=1024, description="CPUs the worker reserves on a Ray cluster.")
    memory_gb: float | None = Field(
        default=None,
        gt=0,
        le=4096,
        description="Memory the worker reserves on a Ray cluster (none: no reservation).",
    )

    @model_validator(mode="after")
    def _one_process_per_gpu(self):
        if self.gpus >= 1 and self.workers not in (1, self.gpus):
            raise ValueError(
                f"resources.workers={self.workers} with gpus={self.gpus}: a GPU run has one process per "
                f"GPU; leave workers at 1 or set it to {self.gpus} (gpus 0: CPU workers)"
            )
        return self

    @property
    def processes(self) -> int:
        """Ranks on each node."""
        return max(self.gpus, self.workers)


class EvalSpec(Strict):
    metrics: Literal["tuneforge", "llamafactory"] = Field(
        default="tuneforge",
        description="ROUGE/BLEU definitions `tuneforge eval` uses on this run's model: tuneforge's "
        "(word BLEU-4, rouge-score ROUGE) or LLaMA-Factory's (character BLEU-4, rouge-chinese ROUGE).",
    )


# Methods that take DPO's learning-rate defaults: the preference ones (TRL's trainers) and GRPO.
LOW_RATE_METHODS = ("dpo", "kto", "orpo", "simpo", "grpo")


class RewardSpec(Strict):
    """One GRPO reward; written in full or short: ``exact_match``, ``{format: REGEX}``, ``{length: N}``,
    ``{reward_model: NAME}``."""

    type: Literal["exact_match", "format", "length", "reward_model"] = Field(
        description="exact_match: 1 when the completion's final answer (after ####, in \\boxed{} or "
        "<answer></answer>, else its last number or its text) equals the record's answer; format: 1 when "
        "the completion matches regex; length: 0 at target tokens, falling by 1 per target tokens away; "
        "reward_model: the score of a registered reward model (method rm)."
    )
    regex: str | None = Field(default=None, max_length=500, description="format: the regex to match.")
    target: int | None = Field(default=None, ge=1, description="length: the completion length aimed at.")
    model: str | None = Field(default=None, description="reward_model: a reward model's name or folder.")
    weight: float = Field(default=1.0, description="Weight of this reward in the sum GRPO ranks by.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, v):
        if isinstance(v, str):
            return {"type": v}
        if isinstance(v, dict) and "type" not in v and len(keys := [k for k in v if k != "weight"]) == 1:
            field = {"format": "regex", "length": "target", "reward_model": "model"}.get(keys[0])
            if field:
                return {
                    "type": keys[0],
                    field: v[keys[0]],
                    **({"weight": v["weight"]} if "weight" in v else {}),
                }
        return v

    @model_validator(mode="after")
    def _needs(self):
        need = {"format": "regex", "length": "target", "reward_model": "model"}.get(self.type)
        if need and getattr(self, need) is None:
            raise ValueError(f"reward {self.type} needs {need}, e.g. {{{self.type}: …}}")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"format regex {self.regex!r}: {exc}") from None
        return self


class GrpoSpec(Strict):
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(type="exact_match")],
        min_length=1,
        max_length=16,
        description="GRPO rewards, summed with their weights: exact_match, {format: REGEX}, {length: N}, "
        "{reward_model: NAME}. Your own function: run it in a command job (see docs, methods).",
    )
    num_generations: int = Field(
        default=4, ge=2, le=64, description="Completions sampled per prompt (the group compared)."
    )
    beta: float = Field(
        default=0.0, ge=0.0, description="KL penalty towards the starting model (0: none, no reference pass)."
    )
    max_completion_length: int = Field(default=256, ge=1, le=32768, description="Tokens per completion.")
    temperature: float = Field(default=1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    use_vllm: bool = Field(
        default=False, description="Sample with vLLM on the training GPU (CUDA and vllm needed)."
    )


class JobSpec(Strict):
    """A complete training run."""

    name: Name | None = Field(default=None, description="A label for the run (the job's name).")
    method: Literal["sft", "dpo", "kto", "orpo", "simpo", "pretrain", "rm", "grpo"] = Field(
        default="sft",
        description="Training objective: sft; dpo, orpo, simpo (preference pairs); kto (answers labelled "
        "good or bad); pretrain (raw text); rm (a reward model on preference pairs); grpo (RL with rewards).",
    )
    finetuning: Literal["lora", "qlora", "full"] = Field(default="lora", description="Which weights train.")
    model: str = Field(description="A pulled/imported model name or an HF model folder.")
    trust_remote_code: bool = Field(default=False, description="Run code shipped with the model (ChatGLM…).")
    data: DataSpec
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: HyperParams = Field(default_factory=HyperParams)
    resources: Resources = Field(default_factory=Resources)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    grpo: GrpoSpec = Field(default_factory=GrpoSpec, description="GRPO's rewards and sampling (method grpo).")
    output_dir: str | None = Field(
        default=None, description="Job folder (default under $TUNEFORGE_HOME/jobs)."
    )
    resume_from: str | None = Field(default=None, description="latest or step-N: continue from a checkpoint.")

    @field_validator("resume_from")
    @classmethod
    def _resume(cls, v):
        if v is not None and v != "latest" and not re.fullmatch(r"step-\d+", v):
            raise ValueError("use 'latest' or 'step-N'")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        if self.method == "pretrain" and self.data.mask != "all":
            self.data.mask = "all"
        adapter_only = [k for k in ("plus_ratio", "use_dora", "use_rslora") if getattr(self.lora, k)]
        if self.finetuning == "full" and adapter_only:
            raise ValueError(f"lora.{adapter_only[0]} needs a LoRA adapter; finetuning is full")
        if self.method == "kto" and self.train.batch_size < 2:
            # KTO's KL estimate pairs each answer with another prompt of the same batch
            raise ValueError("method kto needs train.batch_size ≥ 2 (its KL term uses the batch's others)")
        if self.resources.nodes > 1 and self.resources.gpus < 1:
            raise ValueError("resources.nodes > 1 needs resources.gpus ≥ 1 per node")
        if self.method == "grpo" and self.train.batch_size % self.grpo.num_generations:
            raise ValueError(
                f"train.batch_size {self.train.batch_size} counts completions: make it a multiple of "
                f"grpo.num_generations {self.grpo.num_generations}"
            )
        return self

    @property
    def learning_rate(self) -> float:
        if self.train.learning_rate:
            return self.train.learning_rate
        if self.finetuning == "full":
            return 5e-6 if self.method in LOW_RATE_METHODS else 2e-5
        return 5e-5 if self.method in LOW_RATE_METHODS else 2e-4


TEMPLATES: dict[str, dict] = {
    "sft-lora": {"method": "sft", "finetuning": "lora", "description": "Supervised fine-tuning with LoRA."},
    "sft-qlora": {
        "method": "sft",
        "finetuning": "qlora",
        "description": "LoRA on a 4-bit NF4 base (bitsandbytes, CUDA).",
    },
    "sft-full": {
        "method": "sft",
        "finetuning": "full",
        "description": "Supervised fine-tuning of all weights.",
    },
    "dpo-lora": {
        "method": "dpo",
        "finetuning": "lora",
        "description": "Direct preference optimisation, LoRA.",
    },
    "kto-lora": {
        "method": "kto",
        "finetuning": "lora",
        "description": "KTO: answers labelled good or bad (prompt/completion/label), LoRA.",
    },
    "orpo-lora": {
        "method": "orpo",
        "finetuning": "lora",
        "description": "ORPO: preference pairs, SFT and preference in one loss, no reference model, LoRA.",
    },
    "simpo-lora": {
        "method": "simpo",
        "finetuning": "lora",
        "description": "SimPO: preference pairs, length-normalised reward and a margin, no reference, LoRA.",
    },
    "pretrain-lora": {
        "method": "pretrain",
        "finetuning": "lora",
        "description": "Continual pretraining on raw text, LoRA.",
    },
    "rm-lora": {
        "method": "rm",
        "finetuning": "lora",
        "description": "A reward model (a score head) on preference pairs, LoRA.",
    },
    "grpo-lora": {
        "method": "grpo",
        "finetuning": "lora",
        "description": "GRPO: reinforcement learning from rewards on a prompt set, LoRA.",
    },
}


def _section_model(annotation) -> type[BaseModel] | None:
    """The spec section a field holds (``DatasetRef | None``, ``list[DatasetRef]`` → DatasetRef)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if found := _section_model(arg):
            return found
    return None


def closest_key(loc: tuple) -> str | None:
    """The known key an unknown one most likely meant, as a dotted path: ``train.lr`` → train.learning_rate.

    Initials first (lr, bs, wd are how people abbreviate), then spelling (learning_rte), then a name
    that contains the key or is contained in it (epoch → epochs).
    """
    section: type[BaseModel] | None = JobSpec
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections
            continue
        field = section.model_fields.get(part) if section else None
        section = _section_model(field.annotation) if field else None
    if section is None or not isinstance(loc[-1], str):
        return None
    key, names = loc[-1].lower(), list(section.model_fields)
    guess = next((n for n in names if len(key) > 1 and "".join(w[0] for w in n.split("_")) == key), None)
    guess = guess or next(iter(difflib.get_close_matches(key, names, n=1, cutoff=0.6)), None)
    if guess is None:
        containing = [n for n in names if len(key) > 2 and (key in n or n in key)]
        guess = containing[0] if len(containing) == 1 else None
    return ".".join([*(str(p) for p in loc[:-1]), guess]) if guess else None


def _pydantic_problems(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            meant = closest_key(tuple(e["loc"]))
            msg = (
                f"unknown key; did you mean {meant}?"
                if meant
                else "unknown key; see `tuneforge train --print-defaults` for the keys a spec takes"
            )
        lines.append(f"  {where}: {msg}")
    return ConfigError(f"{source}: invalid spec:\n" + "\n".join(lines))


def template_spec(template: str, model: str, dataset: str) -> JobSpec:
    """A template's complete default spec for a model and a training dataset."""
    return parse_spec({"template": template, "model": model, "data": {"train": dataset}}, "template")


# -- a spec's input before validation: --set assignments, dotted overrides, the template ---------------


class _SetValueLoader(yaml.SafeLoader):
    """YAML as PyYAML reads it, plus plain numbers with an exponent and no dot (``1e-4``, ``5E3``) as floats:
    YAML 1.1 reads those as strings, and a user typing ``--set train.learning_rate=1e-4`` means a number."""


_SetValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_value(raw: str):
    """The one rule for a ``--set`` value (``tuneforge train`` and ``tuneforge jobs create``): a YAML scalar,
    list or mapping as PyYAML reads it (``true`` a bool, ``8`` an int, ``[q_proj, v_proj]`` a list, ``1e-4``
    a float, nothing at all None); a quoted value (``'1e-4'``) stays a string. The REST API's ``overrides``
    are JSON values already and are used as they come."""
    return yaml.load(raw, Loader=_SetValueLoader) if raw else None  # noqa: S506 (a SafeLoader)


def parse_assignment(assignment: str) -> tuple[str, object]:
    """``train.learning_rate=1e-4`` → (``train.learning_rate``, 1e-4)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4.")
    try:
        return key, parse_value(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML: {exc}") from None


class OverrideError(ConfigError):
    """A dotted key that cannot be set: ``key`` is the override, ``problem`` what is wrong with it."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def apply_overrides(data: dict, overrides: dict[str, object]) -> dict:
    """Set each dotted key (``train.learning_rate``) in the nested spec dict ``data``, in order; sections
    that are not there yet are made. Returns ``data``."""
    for key, value in overrides.items():
        node, parts = data, key.split(".")
        if "" in parts:
            raise OverrideError(key, "a dotted key needs a name between the dots, e.g. train.learning_rate")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OverrideError(key, f"{part!r} is not a section")
        node[parts[-1]] = value
    return data


def set_dotted(data: dict, assignment: str) -> None:
    """Apply one ``--set`` assignment (``train.learning_rate=1e-4``) to a nested spec dict."""
    key, value = parse_assignment(assignment)
    try:
        apply_overrides(data, {key: value})
    except OverrideError as exc:
        raise ConfigError(f"--set {assignment!r}: {exc.problem}.") from None


class UnknownTemplate(ConfigError):
    def __init__(self, template: object):
        super().__init__(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")


def expand_template(data: dict) -> dict:
    """``template: NAME`` replaced by the method and finetuning it stands for (keys the spec sets win)."""
    template = data.pop("template", None)
    if template:
        if not isinstance(template, str) or template not in TEMPLATES:
            raise UnknownTemplate(template)
        data.setdefault("method", TEMPLATES[template]["method"])
        data.setdefault("finetuning", TEMPLATES[template]["finetuning"])
    return data


def parse_spec(data: dict, source: str = "spec") -> JobSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values at the top level.")
    try:
        data = expand_template(copy.deepcopy(data))
    except UnknownTemplate as exc:
        raise ConfigError(f"{source}: {exc}.") from None
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_problems(exc, source) from None


def load_spec(path: str | Path, overrides: list[str] | None = None, *, resolved: bool = False) -> JobSpec:
    """A spec file with its ``--set`` assignments applied, validated. Dataset paths relative to the file are
    made absolute, as a user reading the file would expect; a ``resolved`` file (the one the server writes
    into a job's folder: defaults filled, datasets by id) is taken as it is."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such spec file.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level.")
    for assignment in overrides or []:
        set_dotted(data, assignment)
    spec = parse_spec(data, str(path))
    if resolved:
        return spec
    for ref in [*spec.data.train, *([spec.data.validation] if spec.data.validation else [])]:
        beside = path.parent / ref.path
        if not Path(ref.path).is_absolute() and beside.exists():
            ref.path = str(beside.resolve())
    return spec


def dump_spec(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def annotated_defaults() -> str:
    """A complete spec with every field's description as a comment (``--print-defaults``)."""
    spec = JobSpec(model="smollm2-135m-instruct", data=DataSpec(train=[DatasetRef(path="data.json")]))
    lines: list[str] = ["# tuneforge JobSpec: every key with its default. Templates: " + ", ".join(TEMPLATES)]

    def emit(model: BaseModel, indent: int) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            pad = "  " * indent
            if field.description:
                lines.append(f"{pad}# {field.description}")
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{name}:")
                emit(value, indent + 1)
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                lines.append(f"{pad}{name}:")
                for item in value:
                    dumped = yaml.safe_dump([item.model_dump(mode="json")], allow_unicode=True)
                    lines.extend(pad + "  " + ln for ln in dumped.splitlines())
            else:
                dumped = yaml.safe_dump({name: value}, allow_unicode=True, default_flow_style=True).strip()
                lines.append(f"{pad}{dumped.strip('{}')}")

    emit(spec, 0)
    return "\n".join(lines) + "\n"
