"""Engines behind the protocol handlers: ``transformers`` (CPU/GPU, continuous batching) and ``vllm``
(CUDA, the ``vllm`` extra). ``auto`` takes vLLM where a GPU and the package are there."""

from __future__ import annotations

import importlib.util

from tuneforge.errors import ConfigError

ENGINES = ("auto", "transformers", "vllm")
QUANTIZE = ("none", "int8")  # weights of the transformers engine's linear layers on CPU (int8_linear.py)


def pick_engine(kind: str) -> str:
    if kind not in ENGINES:
        raise ConfigError(f"--engine {kind!r}: choose one of {', '.join(ENGINES)}.")
    if kind != "auto":
        return kind
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "transformers"


def check_quantize(value: str, engine: str, dtype: str = "auto") -> str:
    """``value`` when ``engine`` (picked) and ``dtype`` can serve it; else a ConfigError saying why."""
    if value not in QUANTIZE:
        raise ConfigError(f"--quantize {value!r}: choose one of {', '.join(QUANTIZE)}.")
    if value != "none" and engine != "transformers":
        raise ConfigError(
            f"--quantize {value} is an option of the transformers engine on a CPU, not of {engine}; pass "
            "--engine transformers --device cpu, or leave --quantize out."
        )
    if value != "none" and dtype not in ("auto", "float32"):
        raise ConfigError(
            f"--quantize {value} computes around float32 activations; --dtype {dtype} cannot go with it. "
            "Leave --dtype out (auto) or pass float32."
        )
    return value
