"""Load a model (with an adapter) for inference and answer chat prompts in batches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.templates import resolve_chat_template
from tuneforge.errors import ConfigError
from tuneforge.models.load import adapter_or_base, load_tokenizer
from tuneforge.models.store import resolve_model


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


def _folders(ref: str | Path, adapter: Path | None, base: str | None) -> tuple[Path, Path | None]:
    """(model folder, adapter folder or None); ``ref`` may itself be an adapter folder (a job's final/)."""
    ref_path = Path(str(ref)).expanduser()
    if adapter is None and (ref_path / "adapter_config.json").exists():
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
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    folder, adapter = _folders(ref, adapter, base)
    tokenizer = load_tokenizer(adapter_or_base(adapter, folder, "tokenizer_config.json"))
    tokenizer.chat_template = resolve_chat_template(tokenizer, None, fallback=fallback_template)
    tokenizer.padding_side = "left"  # generation appends on the right
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    name = folder.name
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        name = f"{folder.name}+{adapter.parent.name if adapter.name == 'final' else adapter.name}"
    model.eval()
    try:
        generation = GenerationConfig.from_pretrained(
            str(adapter_or_base(adapter, folder, "generation_config.json"))
        )
    except OSError:
        generation = GenerationConfig(eos_token_id=tokenizer.eos_token_id)
    eos = generation.eos_token_id
    stop_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return LoadedModel(model, tokenizer, stop_ids, name, generation)


def chat_prompts(lm: LoadedModel, conversations: list[list[dict]]) -> list[str]:
    return [
        lm.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
    ]


def generate(
    lm: LoadedModel,
    conversations: list[list[dict]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    on_batch=None,
    repetition_penalty: float | None = None,
) -> list[str]:
    """Answers to each conversation (ending with a user turn), batched with left padding.

    Greedy by default (evaluation wants the same answer each run). With ``repetition_penalty`` (the
    demo answers of quickstart) the model's saved generation settings apply, sampling included, plus
    the penalty, so a tiny model's greedy loops do not hide what training changed.
    """
    import copy

    import torch
    from transformers import GenerationConfig

    if repetition_penalty is None:
        settings = GenerationConfig(do_sample=False)
    else:
        settings = copy.deepcopy(lm.generation) if lm.generation is not None else GenerationConfig()
        settings.repetition_penalty = repetition_penalty
    settings.max_new_tokens = max_new_tokens
    settings.eos_token_id = lm.stop_ids or None
    settings.pad_token_id = lm.tokenizer.pad_token_id
    prompts = chat_prompts(lm, conversations)
    answers: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        enc = lm.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = lm.model.generate(**enc, generation_config=settings)
        new = out[:, enc["input_ids"].shape[1] :]
        answers += [lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
        if on_batch:
            on_batch(len(chunk))
    return answers
