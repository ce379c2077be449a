"""Engines behind the protocol handlers: ``transformers`` (CPU/GPU, continuous batching) and ``vllm``
(CUDA, the ``vllm`` extra). ``auto`` takes vLLM where a GPU and the package are there."""

from __future__ import annotations

import importlib.util

from tuneforge.errors import ConfigError

ENGINES = ("auto", "transformers", "vllm")


def pick_engine(kind: str) -> str:
    if kind not in ENGINES:
        raise ConfigError(f"--engine {kind!r}: choose one of {', '.join(ENGINES)}.")
    if kind != "auto":
        return kind
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "transformers"
