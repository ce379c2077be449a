"""Write a model (a fine-tune merged into its base first) as one GGUF file for llama.cpp and Ollama.

The tensors are named with the ``gguf`` package's own maps and written with its ``GGUFWriter``; the
tokenizer, chat template and stop tokens go into the file's metadata, so the file stands alone. The
file must also load back through transformers' GGUF reader (the path ``models pull`` uses).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError, ConflictError
from tuneforge.jobs.staging import staged_folder

log = logging.getLogger(__name__)

QUANTS = ("f16", "q8_0", "q4_0", "q4_k_m")
# model_type → gguf.MODEL_ARCH member name, and whether llama.cpp's rotary layout needs q/k permuted
# (llama uses interleaved rotary pairs; qwen2 uses NeoX halves, written as they are).
ARCHITECTURES = {"llama": ("LLAMA", True), "qwen2": ("QWEN2", False)}


@dataclass
class GGUFExport:
    folder: Path
    gguf: Path
    modelfile: Path
    quant: str
    architecture: str
    tensors: int
    warnings: list[str] = field(default_factory=list)


def _quant_types(quant: str):
    """(type for 2-D weights, type for the embedding and output matrices) for --quant."""
    from gguf import GGMLQuantizationType as Q

    if quant == "q4_k_m":
        raise ConfigError(
            "--quant q4_k_m: the installed gguf package can write Q8_0 and Q4_0 in Python but not the "
            "k-quants (Q4_K). Export --quant f16 and run llama.cpp's `llama-quantize FILE.gguf "
            "OUT.gguf Q4_K_M`, or choose --quant q8_0 or q4_0."
        )
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant!r}: choose one of {', '.join(QUANTS)}.")
    # As llama.cpp does, q4_0 keeps the embedding and output matrices at 8 bits: they are the most
    # sensitive to rounding and small models tie them.
    return {"f16": (Q.F16, Q.F16), "q8_0": (Q.Q8_0, Q.Q8_0), "q4_0": (Q.Q4_0, Q.Q8_0)}[quant]


def _file_type(quant: str) -> int:
    from gguf import LlamaFileType as F

    return {"f16": F.MOSTLY_F16, "q8_0": F.MOSTLY_Q8_0, "q4_0": F.MOSTLY_Q4_0}[quant]


def check_architecture(config) -> tuple[str, bool]:
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"GGUF export supports the {' and '.join(ARCHITECTURES)} architectures; this model is "
            f"{model_type!r}. Export it as safetensors (--format safetensors) instead."
        )
    rope = getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in (None, "default"):
        raise ConfigError(
            f"GGUF export does not write rope scaling ({rope_type!r}) yet; this model uses it, so its "
            "GGUF would answer wrongly past its base context. Export as safetensors instead."
        )
    return ARCHITECTURES[model_type]


def permute_rotary(weights, n_head: int):
    """HF's q/k rows → llama.cpp's interleaved rotary layout (transformers' GGUF reader undoes it)."""
    dim = weights.shape[0] // n_head // 2
    return weights.reshape(n_head, 2, dim, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _pre_tokenizer_name(spec: dict | None) -> str | None:
    """llama.cpp's name (``tokenizer.ggml.pre``) for the tokenizer's word splitting, or None when
    tuneforge does not know it: llama.cpp picks its splitting regex by this name alone."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

    if not spec:
        return None
    steps = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if (
        kinds == ["Digits", "ByteLevel"]
        and steps[0].get("individual_digits")
        and steps[1].get("use_regex", True)
    ):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == QWEN2_SPLIT:
        return "qwen2"
    return None


def add_tokenizer(writer, tokenizer, vocab_size: int, warnings: list[str]) -> None:
    """The vocabulary, merges, special tokens and chat template as llama.cpp reads them."""
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or (spec.get("decoder") or {}).get("type") != "ByteLevel"
    ):
        raise ConfigError(
            "GGUF export writes byte-level BPE tokenizers (the GPT-2 kind SmolLM2, Qwen2 and Llama 3 use); "
            f"this model's tokenizer is {model.get('type')!r} with decoder "
            f"{(spec.get('decoder') or {}).get('type')!r}. Export as safetensors instead."
        )
    if len(tokenizer) > vocab_size:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab_size}; "
            "resize the embedding (model.resize_token_embeddings) before exporting."
        )
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i >= len(tokenizer):  # llama.cpp's convention for embedding rows no token uses
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(tokenizer.convert_ids_to_tokens(i))
        tok = added.get(i)
        types.append(
            TokenType.NORMAL if tok is None else TokenType.CONTROL if tok.special else TokenType.USER_DEFINED
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer"))
    if pre is None:
        warnings.append(
            "the tokenizer's word splitting is not one tuneforge recognises (gpt-2, smollm, qwen2); the "
            "GGUF says 'default', and llama.cpp may split some text differently from transformers."
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre or "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "unk", "pad"):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        if tid is not None:
            getattr(writer, f"add_{kind}_token_id")(int(tid))
    probe = tokenizer("a").input_ids
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_chat_template(tokenizer.chat_template)


def rope_theta(config) -> float:
    """transformers 5 keeps it in ``rope_parameters``; older configs as ``rope_theta``."""
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta or getattr(config, "rope_theta", None) or 10000.0)


def _add_hparams(writer, config, file_type: int) -> None:
    heads = config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(getattr(config, "head_dim", None) or config.hidden_size // heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)


def add_tensors(writer, model, arch_name: str, permute: bool, quant: str) -> int:
    import gguf
    import numpy as np
    import torch

    config = model.config
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    weight_type, edge_type = _quant_types(quant)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    count = 0
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # the reader ties the output to token_embd when no output.weight is written
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConfigError(
                f"GGUF export: no GGUF name for tensor {hf_name!r} of this {arch_name.lower()} model."
            )
        data = tensor.detach().to(torch.float32).numpy()
        if permute and hf_name.endswith("q_proj.weight"):
            data = permute_rotary(data, heads)
        elif permute and hf_name.endswith("k_proj.weight"):
            data = permute_rotary(data, kv_heads)
        qtype = edge_type if name in ("token_embd.weight", "output.weight") else weight_type
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if data.ndim != 2 or data.shape[-1] % block:
            # norms and biases stay F32 (llama.cpp does the same); a row that no block size divides
            # falls back to F16
            qtype = gguf.GGMLQuantizationType.F32 if data.ndim == 1 else gguf.GGMLQuantizationType.F16
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, np.ascontiguousarray(data))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, np.ascontiguousarray(data.astype(np.float16)))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        count += 1
    return count


def export_gguf(
    model_ref: str | Path,
    output: Path,
    quant: str = "f16",
    base: str | None = None,
    progress=None,
) -> GGUFExport:
    """Merge (when ``model_ref`` is an adapter) and write ``output/<name>.<quant>.gguf`` + ``Modelfile``.

    ``output`` appears only when complete (temporary folder + rename): a failed export leaves nothing.
    """
    import gguf

    from .inference import load_for_inference
    from .ollama import modelfile

    output = Path(output)
    _quant_types(quant)  # refuse a quantization before loading anything
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConflictError(f"{output} exists and is not empty; choose another --output or remove it.")
    step = progress or (lambda *a: None)
    step("load", None, None)
    lm = load_for_inference(model_ref, base=base)
    arch_name, permute = check_architecture(lm.model.config)
    if hasattr(lm.model, "merge_and_unload"):
        step("merge", None, None)
        lm.model = lm.model.merge_and_unload()
    config = lm.model.config
    # the file's name goes into the Modelfile's FROM line: keep it to characters no parser trips on
    name = re.sub(r"[^A-Za-z0-9._-]", "-", output.name).strip("-.") or "model"
    warnings: list[str] = []
    with staged_folder(output) as tmp:
        gguf_path = tmp / f"{name}.{quant}.gguf"
        writer = gguf.GGUFWriter(str(gguf_path), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch_name)])
        writer.add_name(name)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hparams(writer, config, _file_type(quant))
        add_tokenizer(writer, lm.tokenizer, config.vocab_size, warnings)
        step("write", None, None)
        count = add_tensors(writer, lm.model, arch_name, permute, quant)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        text, template_warnings = modelfile(f"./{gguf_path.name}", lm.tokenizer, lm.stop_ids, lm.generation)
        warnings += template_warnings
        (tmp / "Modelfile").write_text(text, encoding="utf-8")
    for w in warnings:
        log.warning("%s", w)
    return GGUFExport(
        output, output / gguf_path.name, output / "Modelfile", quant, config.model_type, count, warnings
    )
