"""A LLaMA-Factory training config (YAML or `llamafactory-cli train …` line) as a tuneforge JobSpec.

Every key the config holds ends up in exactly one place: a JobSpec field (``KEYS``, in lf_keys.py
with the other tables, and the special cases below), a one-line note for keys that do not apply here
(``NOT_APPLICABLE``), an error for what tuneforge refuses to run as something else (freeze tuning,
8-bit bases, the PPO stage), or a warning for keys it does not know (errors with ``strict``).
Nothing is dropped silently.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.data.templates import LLAMAFACTORY_PREFIX, LLAMAFACTORY_TEMPLATES
from tuneforge.errors import ConfigError
from tuneforge.settings import get_settings
from tuneforge.spec import JobSpec, parse_spec, set_dotted

from .lf_args import read_arguments
from .lf_data import DatasetProblems, dataset_ref, read_dataset_info
from .lf_keys import (
    KEYS,
    LAYOUT_AFTER_STOP,
    LF_DEFAULTS,
    NOT_APPLICABLE,
    OPTIMIZERS,
    PREF_LOSSES,
    REFUSED_TEMPLATES,
    SCHEDULERS,
    STAGES,
)


@dataclass
class Conversion:
    """The JobSpec data a LLaMA-Factory config converts to, and what the conversion had to say."""

    source: str
    data: dict
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def job_spec(self, overrides: list[str] | None = None) -> JobSpec:
        data = copy.deepcopy(self.data)  # --set changes the copy
        for assignment in overrides or []:
            set_dotted(data, assignment)
        return parse_spec(data, f"{self.source} (converted from LLaMA-Factory)")

    def yaml_text(self) -> str:
        """The spec as YAML, headed by the conversion's notes and warnings as comments."""
        head = [f"# tuneforge JobSpec converted from the LLaMA-Factory config {self.source}"]
        head += [f"# note: {n}" for n in self.notes] + [f"# warning: {w}" for w in self.warnings]
        body = yaml.safe_dump(self.job_spec().model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        return "\n".join(head) + "\n" + body


def load_llamafactory(path: str | Path, strict: bool = False) -> Conversion:
    """Convert the config in ``path`` (``-``: standard input)."""
    if str(path) == "-":
        text, source, base_dir = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file.") from None
        source, base_dir = str(path), path.resolve().parent
    return convert_llamafactory(read_arguments(text, source, base_dir), source, base_dir, strict)


def convert_llamafactory(
    args: dict[str, Any], source: str, base_dir: Path | None = None, strict: bool = False
) -> Conversion:
    """JobSpec data for LLaMA-Factory ``args``; raises ConfigError listing every problem at once."""
    base_dir = base_dir or Path.cwd()
    args = dict(args)
    out = Conversion(source, {})
    errors: list[str] = []
    data = out.data

    def put(dotted: str, value: Any) -> None:
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    silent = {k: v for k, v in LF_DEFAULTS.items() if k not in args}
    if "warmup_steps" in args:
        silent.pop("warmup_ratio", None)
    if any(k in args for k in ("fp16", "pure_bf16")):
        silent.pop("bf16", None)
    if silent:
        args.update(silent)
        out.notes.append(
            "LLaMA-Factory defaults for keys the config leaves out: "
            + ", ".join(f"{k} {v}" for k, v in silent.items())
        )
    stage = args.pop("stage", "sft")
    if stage not in STAGES:
        errors.append(
            f"stage {stage!r}: tuneforge trains the stages {', '.join(STAGES)} (pt: pretraining; dpo "
            "with pref_loss sigmoid, orpo or simpo); PPO is not a tuneforge method."
        )
    put("method", STAGES.get(stage, "sft"))
    put("eval.metrics", "llamafactory")  # its run's scores are compared with LLaMA-Factory's own
    if stage == "sft":  # LLaMA-Factory cuts each turn's prompt to keep its answer (infer_seqlen)
        put("data.truncation", "keep_answers")
        out.notes.append(
            f"cutoff_len {args['cutoff_len']}: cut as LLaMA-Factory cuts (data.truncation keep_answers: a "
            "long prompt is shortened so that its answer is still trained)"
        )
    _preference_loss(args, stage, put, errors)
    _finetuning(args, put, errors)
    _precision(args, put, out)
    _lora_targets(args, put)
    _optimizer_and_schedule(args, put, errors, out)
    _masking_and_template(args, put, errors, out)
    _data(args, stage, base_dir, put, errors, out)
    if "model_name_or_path" not in args:
        default = get_settings().default_model
        out.warnings.append(f"no model_name_or_path; using the default model {default}")
        put("model", default)
    if args.get("max_steps") is not None and args["max_steps"] <= 0:
        args.pop("max_steps")  # LLaMA-Factory's -1: train by epochs
    elif "max_steps" in args:
        put("train.max_steps", args.pop("max_steps"))
    for key in list(args):
        value = args.pop(key)
        if key in KEYS:
            put(KEYS[key], value)
        elif key in NOT_APPLICABLE:
            out.notes.append(f"{key}: {NOT_APPLICABLE[key]}")
        else:
            out.warnings.append(f"{key}: not a LLaMA-Factory key tuneforge knows; ignored")
    if strict and out.warnings:
        errors += [f"{w.removesuffix('; ignored')} (an error under --strict)" for w in out.warnings]
    if errors:
        raise ConfigError(f"{source}: cannot convert this LLaMA-Factory config:\n  " + "\n  ".join(errors))
    out.job_spec()  # every value checked now, with the JobSpec's own messages
    return out


def _finetuning(args: dict, put, errors: list[str]) -> None:
    kind = args.pop("finetuning_type", "lora")
    bits = args.pop("quantization_bit", None)
    method = args.get("quantization_method", "bitsandbytes")
    if kind == "freeze":
        errors.append(
            "finetuning_type freeze (training only the last layers) is not a tuneforge method; use "
            "finetuning_type lora (an adapter on every linear layer, less memory) or full."
        )
    elif kind not in ("lora", "full"):
        errors.append(f"finetuning_type {kind!r}: use lora or full.")
    if bits is not None:
        if bits != 4:
            errors.append(
                f"quantization_bit {bits}: tuneforge quantizes the base model to 4-bit NF4 only (QLoRA); "
                "use quantization_bit 4 or leave it out."
            )
        elif kind != "lora":
            errors.append(
                "quantization_bit 4 trains a LoRA adapter on the quantized base; use finetuning_type lora."
            )
        elif method != "bitsandbytes":
            errors.append(f"quantization_method {method!r}: QLoRA here uses bitsandbytes.")
        kind = "qlora" if bits == 4 and kind == "lora" else kind
    put("finetuning", kind if kind in ("lora", "qlora", "full") else "lora")


def _precision(args: dict, put, out: Conversion) -> None:
    said = any(k in args for k in ("bf16", "fp16", "pure_bf16"))
    bf16, fp16, pure = args.pop("bf16", False), args.pop("fp16", False), args.pop("pure_bf16", False)
    if bf16 or pure:
        put("train.precision", "bf16")
        if pure:
            out.notes.append("pure_bf16: trained in bf16 mixed precision (train.precision bf16)")
    elif fp16:
        put("train.precision", "fp16")
    elif said:  # LLaMA-Factory trains in fp32 when both are off; auto would pick bf16 on a GPU
        put("train.precision", "fp32")


def _lora_targets(args: dict, put) -> None:
    target = args.pop("lora_target", None)
    if target is not None:
        names = _names(target)
        put("lora.target_modules", "all-linear" if names == ["all"] else names)
    extra = args.pop("additional_target", None)
    if extra:
        put("lora.modules_to_save", _names(extra))
    if "lora_alpha" not in args and "lora_rank" in args:
        args["lora_alpha"] = 2 * int(args["lora_rank"])  # LLaMA-Factory's default: alpha = 2 × rank


def _optimizer_and_schedule(args: dict, put, errors: list[str], out: Conversion) -> None:
    if "optim" in args:
        name = str(args.pop("optim"))
        if name in OPTIMIZERS:
            put("train.optimizer", OPTIMIZERS[name])
        else:
            errors.append(
                f"optim {name!r}: tuneforge trains with {', '.join(sorted(set(OPTIMIZERS.values())))}."
            )
    scheduler = args.get("lr_scheduler_type")
    if scheduler is not None and scheduler not in SCHEDULERS:
        errors.append(f"lr_scheduler_type {scheduler!r}: use one of {', '.join(SCHEDULERS)}.")
    if "disable_gradient_checkpointing" in args:
        put("train.gradient_checkpointing", not args.pop("disable_gradient_checkpointing"))
    if "loraplus_lr_embedding" in args:
        out.notes.append(
            f"loraplus_lr_embedding {args.pop('loraplus_lr_embedding')}: peft's default (1e-6) is used "
            "for LoRA on embeddings"
        )
    if "resume_from_checkpoint" in args:
        value = args.pop("resume_from_checkpoint")
        if value:
            out.warnings.append(
                f"resume_from_checkpoint {value}: resume a tuneforge job with --resume instead; ignored"
            )
    if "deepspeed" in args:
        config = str(args.pop("deepspeed"))
        stage = "zero3" if "3" in Path(config).name else "zero2" if "2" in Path(config).name else None
        if stage:
            put("resources.strategy", stage)
            out.notes.append(
                f"deepspeed {config}: resources.strategy {stage} (tuneforge writes its own config)"
            )
        else:
            out.warnings.append(f"deepspeed {config}: stage not recognised from the name; ignored")


def _preference_loss(args: dict, stage: str, put, errors: list[str]) -> None:
    """stage: dpo's pref_loss picks the method (orpo, simpo); pref_ftx (an added SFT loss) is not run."""
    loss = args.pop("pref_loss", "sigmoid")
    if loss not in PREF_LOSSES:
        errors.append(
            f"pref_loss {loss!r}: tuneforge trains {', '.join(PREF_LOSSES)} (stage: dpo) and stage: kto."
        )
    elif stage == "dpo":  # other stages do not read it (as in LLaMA-Factory)
        put("method", PREF_LOSSES[loss])
    ftx = args.pop("pref_ftx", 0)
    if ftx not in (0, 0.0):
        errors.append(f"pref_ftx {ftx!r}: tuneforge's preference losses have no added SFT term; remove it.")


def _masking_and_template(args: dict, put, errors: list[str], out: Conversion) -> None:
    if args.pop("train_on_prompt", False):
        put("data.mask", "all")
    elif args.pop("mask_history", False):
        put("data.mask", "last")
    args.pop("train_on_prompt", None)
    args.pop("mask_history", None)
    template = args.pop("template", None)
    if template is None:
        return
    template = str(template)
    if template in LLAMAFACTORY_TEMPLATES:
        put("data.chat_template", LLAMAFACTORY_PREFIX + template)
        note = f"template {template}: LLaMA-Factory's, reproduced ({LLAMAFACTORY_PREFIX}{template})"
        if template in LAYOUT_AFTER_STOP:
            note += (
                f"; the {LAYOUT_AFTER_STOP[template]!r} it writes after each answer's stop token is not "
                "trained here (LLaMA-Factory trains it): the loss ends at the stop token, where "
                "generation stops"
            )
        out.notes.append(note)
        if template == "empty":
            out.warnings.append(
                "template empty: LLaMA-Factory's empty template writes no stop token after an answer, "
                "so the model does not learn to stop (as there)"
            )
        return
    why = REFUSED_TEMPLATES.get(
        template,
        "tuneforge does not reproduce it; the nearest is the model's own chat template (auto), whose "
        f"text may differ from LLaMA-Factory's {template}",
    )
    errors.append(
        f"template {template}: {why}. tuneforge reproduces LLaMA-Factory's "
        f"{', '.join(LLAMAFACTORY_TEMPLATES)}; choose one of them, or remove template and give "
        "--set data.chat_template=NAME (a tuneforge template, auto or Jinja) to train on that text knowingly."
    )


def _data(args: dict, stage: str, base_dir: Path, put, errors: list[str], out: Conversion) -> None:
    problems = DatasetProblems()
    dataset_dir = args.pop("dataset_dir", "data")
    given = Path(str(dataset_dir))
    folder = given if given.is_absolute() or (Path.cwd() / given).is_dir() else base_dir / given
    info = read_dataset_info(folder, problems) if folder.is_dir() else None
    if not folder.is_dir() and args.get("dataset"):
        problems.warnings.append(f"dataset_dir {dataset_dir} does not exist here")
    max_samples = args.pop("max_samples", None)

    def refs(key: str) -> list[dict]:
        names = _names(args.pop(key, None))
        found = [dataset_ref(n, info, folder if folder.is_dir() else None, stage, problems) for n in names]
        found = [r for r in found if r]
        for ref in found:
            if max_samples:
                ref["max_samples"] = min(ref.get("max_samples", max_samples), int(max_samples))
        return found

    train = refs("dataset")
    if not train:
        errors.append("no dataset: give --dataset NAME (an entry of dataset_dir/dataset_info.json).")
    put("data.train", train)
    validation = refs("eval_dataset")
    if validation:
        put("data.validation", validation[0])
        if len(validation) > 1:
            problems.warnings.append("eval_dataset: tuneforge evaluates on one dataset; using the first")
    val_size = args.get("val_size")
    if val_size is not None and val_size >= 1:
        args.pop("val_size")
        errors.append(f"val_size {val_size}: a count of records; give a fraction below 0.5 (e.g. 0.1).")
    for key in ("packing", "neat_packing"):
        if key in args:
            put("data.packing", bool(args.pop(key)))
    if data_packing_off(out.data):
        out.notes.append(
            "packing False: padded batches as in LLaMA-Factory; tuneforge's packing (data.packing: true) "
            "keeps examples apart with the same loss and no padding, and trains faster"
        )
    if args.pop("streaming", False):
        problems.warnings.append("streaming: datasets are read whole; ignored")
    errors += problems.errors
    out.warnings += problems.warnings
    out.notes += problems.notes


def data_packing_off(data: dict) -> bool:
    return data.get("data", {}).get("packing") is False


def _names(value) -> list[str]:
    """``a,b`` or a YAML list, as LLaMA-Factory takes dataset and module names."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]
