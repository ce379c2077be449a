"""Merge a LoRA adapter into its base and save a standalone model (safetensors + tokenizer + template)."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.errors import ConfigError, ConflictError
from tuneforge.jobs.staging import staged_folder

from .inference import adapter_base
from .info import describe_folder, write_info
from .load import adapter_or_base, load_tokenizer
from .store import resolve_model


def merge_adapter(
    adapter: Path, output: Path, base: str | None = None, dtype: str = "float32", progress=None
) -> Path:
    """Write ``output`` only when the merged model is complete (temporary folder + rename)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    adapter, output = Path(adapter), Path(output)
    if not (adapter / "adapter_config.json").exists():
        raise ConfigError(
            f"{adapter}: not a LoRA adapter (no adapter_config.json). A full fine-tune's final/ "
            "is already a standalone model."
        )
    if output.exists() and any(output.iterdir()):
        raise ConflictError(f"{output} exists and is not empty; choose another --output or remove it.")
    base_folder = resolve_model(base or adapter_base(adapter))
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype {dtype!r}: use float32, bfloat16 or float16.")
    step = progress or (lambda *a: None)
    step("load", None, None)
    model = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter))
    step("merge", None, None)
    merged = model.merge_and_unload().to(getattr(torch, dtype))
    with staged_folder(output) as tmp:  # output appears only when complete
        merged.save_pretrained(str(tmp))
        tokenizer = load_tokenizer(adapter_or_base(adapter, base_folder, "tokenizer_config.json"))
        tokenizer.save_pretrained(str(tmp))
        gen_src = adapter_or_base(adapter, base_folder, "generation_config.json")
        try:
            GenerationConfig.from_pretrained(str(gen_src)).save_pretrained(str(tmp))
        except OSError:
            pass
        meta = adapter / "tuneforge.json"
        lineage = json.loads(meta.read_text()) if meta.exists() else {}
        info = describe_folder(
            tmp,
            output.name,
            f"merge:{adapter.resolve()}",
            tokenizer,
            kind="merged",
            extra={
                "base_model": str(base_folder),
                "adapter": str(adapter.resolve()),
                "job": lineage.get("job"),
            },
        )
        write_info(tmp, info)
    return output
