"""Load a model for inference: a stored name, an HF folder, a merged export, or a job's final/ adapter
on its base, with any number of extra LoRA adapters sharing the base weights.

Evaluation, export and the serving worker all load models through here, so a model answers the same
way wherever it is used: with the chat template and stop tokens saved beside it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.jobs.folder import FINAL_DIR

from .load import adapter_or_base, load_tokenizer
from .reward import refuse_reward_model
from .store import check_name, resolve_model

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    stop_ids: list[int]
    name: str
    generation: object = None  # the model's saved GenerationConfig (sampling settings), if any


def adapter_base(adapter: Path) -> str:
    """The base model folder an adapter was trained on (tuneforge.json, else peft's record)."""
    meta = adapter / "tuneforge.json"
    if meta.exists():
        return json.loads(meta.read_text())["base_model"]
    cfg = adapter / "adapter_config.json"
    if cfg.exists():
        return json.loads(cfg.read_text())["base_model_name_or_path"]
    raise ConfigError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json).")


def is_adapter(path: str | Path) -> bool:
    return (Path(str(path)).expanduser() / "adapter_config.json").exists()


def uses_dora(path: str | Path) -> bool:
    """A DoRA adapter (``lora.use_dora``): peft cannot batch it with others, so it is served merged."""
    try:
        return bool(
            json.loads((Path(str(path)).expanduser() / "adapter_config.json").read_text()).get("use_dora")
        )
    except (OSError, ValueError, AttributeError):
        return False


def adapter_display_name(adapter: Path) -> str:
    """A job's ``final/`` is named after its job folder; any other adapter folder after itself."""
    adapter = adapter.resolve()
    return adapter.parent.name if adapter.name == FINAL_DIR else adapter.name


def stop_token_ids(folder: Path, tokenizer) -> list[int]:
    """The stop tokens saved with a model (generation_config.json ``eos_token_id``), else its EOS."""
    gen = folder / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.exists() else None
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return [int(i) for i in ids]


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        from tuneforge.data.templates import resolve_chat_template

        tokenizer.chat_template = resolve_chat_template(tokenizer, None)


def _load_base(folder: Path, device: str | None = None, dtype=None):
    """``dtype`` None: fp32 on CPU (evaluation and export want exact numbers), bf16 on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.bfloat16 if device and device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model.to(device) if device else model


def _folders(ref: str | Path, adapter: Path | None, base: str | None) -> tuple[Path, Path | None]:
    """(model folder, adapter folder or None); ``ref`` may itself be an adapter folder (a job's final/)."""
    ref_path = Path(str(ref)).expanduser()
    if adapter is None and is_adapter(ref_path):
        adapter, ref = ref_path, base or adapter_base(ref_path)
    return resolve_model(str(ref)), adapter


def saved_chat_template(ref: str | Path, adapter: Path | None = None) -> str | None:
    """The chat template stored with a model (for a fine-tuned one: the template it was trained with)."""
    folder, adapter = _folders(ref, adapter, None)
    template = load_tokenizer(adapter_or_base(adapter, folder, "tokenizer_config.json")).chat_template
    return template if isinstance(template, str) and template else None


def load_for_inference(
    ref: str | Path,
    adapter: Path | None = None,
    base: str | None = None,
    fallback_template: str | None = None,
) -> LoadedModel:
    """A model for generation: a stored/folder model, optionally with a LoRA adapter on it.

    ``ref`` may itself be an adapter folder (a job's final/); its base is then read from it. The chat
    template is resolved as training resolves it: the model's own (a final/ folder carries the one it
    was trained with), else ``fallback_template``, else tuneforge's 'plain' with a warning.
    """
    from transformers import GenerationConfig

    from tuneforge.data.templates import resolve_chat_template

    folder, adapter = _folders(ref, adapter, base)
    tokenizer = load_tokenizer(adapter_or_base(adapter, folder, "tokenizer_config.json"))
    tokenizer.chat_template = resolve_chat_template(tokenizer, None, fallback=fallback_template)
    tokenizer.padding_side = "left"  # generation appends on the right
    model = _load_base(folder)
    name = folder.name
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        name = f"{folder.name}+{adapter_display_name(adapter)}"
    model.eval()
    generation_folder = adapter_or_base(adapter, folder, "generation_config.json")
    try:
        generation = GenerationConfig.from_pretrained(str(generation_folder))
    except OSError:
        generation = None
    stop_ids = stop_token_ids(generation_folder, tokenizer)
    return LoadedModel(model, tokenizer, stop_ids, name, generation)


@dataclass
class ServedVariant:
    """One model id a server answers to: the base, or one adapter on it."""

    id: str
    tokenizer: object  # carries this variant's chat template (adapters save the one they trained with)
    stop_ids: list[int]
    path: str
    adapter: str | None = None  # peft adapter name; None is the base
    parent: str | None = None


@dataclass
class ServedModel:
    """A base model with its adapters loaded once, sharing the base weights."""

    model: object
    base_id: str
    base_folder: Path
    variants: dict[str, ServedVariant] = field(default_factory=dict)

    @property
    def has_adapters(self) -> bool:
        return any(v.adapter for v in self.variants.values())


def _variant(vid: str, folder: Path, base_folder: Path, adapter: str | None, parent: str | None):
    tokenizer = load_tokenizer(adapter_or_base(folder, base_folder, "tokenizer_config.json"))
    ensure_chat_template(tokenizer)
    stops = stop_token_ids(adapter_or_base(folder, base_folder, "generation_config.json"), tokenizer)
    return ServedVariant(vid, tokenizer, stops, str(folder), adapter, parent)


def load_for_serving(
    ref: str | Path,
    adapters: dict[str, str | Path] | None = None,
    name: str | None = None,
    device: str | None = None,
    load_weights: bool = True,
    dtype: str = "auto",
) -> ServedModel:
    """A base model (stored name, HF folder, merged export) plus named LoRA adapters on it.

    ``ref`` may be an adapter (a job's final/): its base is loaded and the adapter is served under
    ``name`` (default: the job folder's name) beside the base. ``load_weights=False`` reads only
    tokenizers and stop tokens (for an engine that loads the weights itself, like vLLM). ``dtype``:
    see models/precision.py (``auto`` serves in bf16 where this machine computes it faster).
    """
    adapters = {k: Path(str(v)).expanduser() for k, v in (adapters or {}).items()}
    ref_path = Path(str(ref)).expanduser()
    for label, path in [(str(ref), ref_path), *adapters.items()]:
        refuse_reward_model(path, label)
    if is_adapter(ref_path):
        adapters = {name or adapter_display_name(ref_path): ref_path, **adapters}
        ref, name = adapter_base(ref_path), None
    base_folder = resolve_model(str(ref))
    base_id = check_name(name or (str(ref) if Path(str(ref)).name == str(ref) else base_folder.name))
    for aid, path in adapters.items():
        check_name(aid)
        if aid == base_id:
            raise ConfigError(f"adapter name {aid!r} is the base model's id; pick another NAME=PATH.")
        if not is_adapter(path):
            raise ConfigError(f"--adapter {aid}={path}: not a LoRA adapter folder (no adapter_config.json).")
        trained_on = adapter_base(path)
        try:
            same = resolve_model(trained_on).resolve() == base_folder.resolve()
        except Exception:  # the recorded base may be a hub id or a moved folder; shapes decide below
            same = True
        if not same:
            raise ConfigError(
                f"--adapter {aid}={path} was trained on {trained_on}, not on {base_folder}; serve it "
                "with its own base."
            )
    dora = [aid for aid, path in adapters.items() if uses_dora(path)]
    if dora and len(adapters) > 1:
        raise ConfigError(
            f"adapter {dora[0]} is a DoRA adapter: peft cannot decode DoRA adapters in a batch with other "
            "adapters, so a DoRA fine-tune is served on its own (merged into its base). Serve it in a worker "
            "(deployment) of its own."
        )
    if dora and not load_weights:
        raise ConfigError(
            f"adapter {dora[0]} is a DoRA fine-tune: it is served merged into its base by the transformers "
            "engine; the vllm engine cannot serve it (use --engine transformers)."
        )
    model = None
    if load_weights:
        from .precision import serving_dtype

        model = _load_base(base_folder, device, serving_dtype(dtype, device))
    if adapters and model is not None:
        from peft import PeftModel

        items = list(adapters.items())
        model = PeftModel.from_pretrained(model, str(items[0][1]), adapter_name=items[0][0])
        for aid, path in items[1:]:
            model.load_adapter(str(path), adapter_name=aid)
        # peft keeps adapter weights in fp32; in a bf16 model that is a cast per layer per step
        model.to(next(model.get_base_model().parameters()).dtype)
        log.info("loaded adapters %s on %s", ", ".join(adapters), base_folder)
    if dora:
        # DoRA's magnitude and direction fold into plain weights: exact, and as fast as the base. The base
        # itself is then not served beside it (its weights are gone).
        aid = dora[0]
        if model is not None:
            model = model.merge_and_unload()
            log.info("DoRA adapter %s merged into %s; the base is not served beside it", aid, base_folder)
        served = ServedModel(model.eval() if model is not None else None, aid, base_folder)
        served.variants[aid] = _variant(aid, adapters[aid], base_folder, None, None)
        return served
    if model is not None:
        model.eval()
    served = ServedModel(model, base_id, base_folder)
    served.variants[base_id] = _variant(base_id, base_folder, base_folder, None, None)
    for aid, path in adapters.items():
        served.variants[aid] = _variant(aid, path, base_folder, aid, base_id)
    return served
