"""Load the base model and tokenizer for a run, and put the adapter (LoRA/QLoRA) on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tuneforge.errors import ConfigError, require
from tuneforge.models.store import resolve_model
from tuneforge.spec import JobSpec

from . import attention
from .optim import check_optimizer
from .tracking import require_trackers

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: str  # cuda | cpu
    dtype_name: str  # float32 | bfloat16 | float16

    @property
    def bf16(self) -> bool:
        return self.dtype_name == "bfloat16"

    @property
    def fp16(self) -> bool:
        return self.dtype_name == "float16"


def preflight(spec: JobSpec) -> Runtime:
    """Check the machine can run the spec, before loading anything heavy."""
    import torch

    resolve_model(spec.model)  # a model that is not there fails here, before the job folder exists
    require_trackers(spec.train.report_to)  # so does `pip install 'tuneforge[mlflow]'` not yet run
    cuda = torch.cuda.is_available()
    if spec.finetuning == "qlora":
        if not cuda:
            raise ConfigError(
                "QLoRA (finetuning: qlora) needs a CUDA GPU and this machine has none. Use "
                "finetuning: lora (same adapter, full-precision base) on CPU."
            )
        require("bitsandbytes", "qlora", "QLoRA")
    if spec.resources.gpus > 1 or spec.resources.nodes > 1:
        if not cuda or torch.cuda.device_count() < spec.resources.gpus:
            raise ConfigError(
                f"resources.gpus={spec.resources.gpus} but this machine has "
                f"{torch.cuda.device_count() if cuda else 0} CUDA GPU(s)."
            )
        if spec.resources.strategy in ("zero2", "zero3"):
            require("deepspeed", "deepspeed", f"strategy {spec.resources.strategy}")
    precision = spec.train.precision
    if precision == "auto":
        fast_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16_matmul()
        precision = "bf16" if fast_bf16 else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU; use fp32 (or bf16) on CPU.")
    if precision == "bf16" and not cuda and not cpu_has_bf16_matmul():  # asked for: trained as asked
        log.warning(
            "train.precision bf16: training in bfloat16 on this CPU, as asked; it has no AMX bf16 tiles, so "
            "bf16 matrix products are emulated and several times slower than fp32 here (train.precision "
            "auto or fp32 trains in fp32)"
        )
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    check_optimizer(spec, "cuda" if cuda else "cpu", dtype)
    return Runtime("cuda" if cuda else "cpu", dtype)


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware faster than fp32 ones: AMX tiles (Intel
    Sapphire Rapids and later). There oneDNN's bf16 products ran 6-8x the fp32 ones (docs/performance.md);
    without AMX, on a CPU without AVX-512, bf16 is emulated and several times slower than fp32."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3
    try:
        return bool(probe and probe())
    except RuntimeError:  # the kernel refused the AMX tile state
        return False


def precision_note(runtime: Runtime) -> str:
    """What the job's arithmetic is, in words, for its log and record."""
    if runtime.dtype_name == "float32":
        return "fp32"
    where = "CUDA" if runtime.device == "cuda" else "CPU, AMX" if cpu_has_bf16_matmul() else "CPU, emulated"
    return f"{runtime.dtype_name} mixed precision ({where})"


def load_model(spec: JobSpec, runtime: Runtime, packed: bool, score_head: bool = False):
    """The model ready to train; returns (model, whether it takes packed rows). ``score_head``: the base
    with one score output instead of the LM head (a reward model), its head trained beside the adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed

    # Seed before the adapter is created: LoRA's initial A matrices are random.
    set_seed(spec.train.seed)
    folder = resolve_model(spec.model)
    dtype = getattr(torch, runtime.dtype_name)
    if runtime.bf16 and runtime.device == "cpu" and spec.finetuning == "full":
        # Every weight trains and is kept in fp32 (below): loaded as published, not rounded to bf16 first.
        # A LoRA job's frozen base is loaded in bf16, halving its memory and the casts under autocast.
        dtype = torch.float32
    kwargs = {"dtype": dtype, "trust_remote_code": spec.trust_remote_code}
    if spec.finetuning == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
        kwargs["device_map"] = {"": 0}
    auto = AutoModelForSequenceClassification if score_head else AutoModelForCausalLM
    model = auto.from_pretrained(str(folder), **kwargs, **({"num_labels": 1} if score_head else {}))
    if packed:
        packed = use_varlen_attention(model)
        if not packed:
            log.warning(
                "%s computes attention in its own code (no attention backends), so examples cannot "
                "share a row safely; training with padded, length-grouped batches",
                type(model).__name__,
            )
    if spec.finetuning in ("lora", "qlora"):
        model = add_lora(model, spec, "SEQ_CLS" if score_head else "CAUSAL_LM")
        if runtime.bf16 and runtime.device == "cpu":
            keep_adapter_inputs_bf16(model)
    if runtime.bf16 and runtime.device == "cpu":
        # What is trained is kept in fp32 (AdamW's updates on bf16 weights would round away); a full
        # fine-tune so trains fp32 weights with the products in bf16 under the Trainer's autocast.
        for param in model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
    from .swiglu import use_lean_swiglu

    use_lean_swiglu(model)  # less kept for backward, same arithmetic (swiglu.py)
    if spec.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.config.use_cache = False
    return model, packed


def add_lora(model, spec: JobSpec, task_type: str = "CAUSAL_LM"):
    """LoRA on ``model``; with task_type SEQ_CLS peft also trains and saves the score head."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if spec.finetuning == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.train.gradient_checkpointing
        )
    names = [n for n, _ in model.named_modules()]
    missing = [m for m in spec.lora.modules_to_save if not any(n == m or n.endswith("." + m) for n in names)]
    if missing:  # peft would skip them without a word
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if n})
        raise ConfigError(
            f"lora.modules_to_save {missing}: the model has no such module; names are {', '.join(leaves)}."
        )
    config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules,
        use_dora=spec.lora.use_dora,
        use_rslora=spec.lora.use_rslora,
        modules_to_save=spec.lora.modules_to_save or None,
        task_type=task_type,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"lora.target_modules {spec.lora.target_modules!r}: {exc}") from exc


def keep_adapter_inputs_bf16(model) -> int:
    """Let the LoRA layers of a bf16 base take their bf16 inputs as they come; returns how many.

    peft casts each adapter's input to its weights' dtype (fp32: peft keeps adapter weights in fp32 for
    the optimizer) and the Trainer's bf16 autocast casts it straight back for the product: two copies of
    every linear's ``[tokens × in]`` input, and two more in backward, a seventh of a CPU step. Under that
    autocast the product is bf16 either way. Outside it (trl's GRPO generates its completions without
    autocast) peft still casts, or a bf16 input would meet the fp32 adapter weight.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = CAST_OUTSIDE_AUTOCAST
            count += 1
    return count


class _CastOutsideAutocast:
    """peft's ``cast_input_dtype_enabled`` flag, read as a truth value on every forward: off while the CPU's
    autocast runs, on otherwise."""

    def __bool__(self) -> bool:
        import torch

        return not torch.is_autocast_enabled("cpu")


CAST_OUTSIDE_AUTOCAST = _CastOutsideAutocast()


def use_varlen_attention(model) -> bool:
    """Switch the model to per-example attention if its architecture routes attention through backends.

    Architectures with their own attention code (bloom, falcon) would ignore the example boundaries
    and attend across examples, so they are refused here rather than trained wrongly.
    """
    if not getattr(type(model), "_supports_attention_backend", False):
        return False
    model.set_attn_implementation(attention.register())
    return True


def trainable_digest(model) -> str:
    """sha256 of the trainable parameters, by name, as float32 bytes: equal on ranks in step."""
    import hashlib

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.removeprefix("module.").encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
