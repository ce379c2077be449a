"""Which floating-point type to serve a model in.

``auto`` is bf16 on CUDA and float32 on a CPU. bf16 on a CPU with native bf16 dot products
(AVX512-BF16, AMX) is faster still (measured here, SmolLM2-135M, one decode step of 16 requests:
fp32 with packed weights 38 ms, bf16 32 ms), but its answers drift with the batch a request shares:
greedy answers of 16 prompts decoded together equalled each prompt decoded alone for 6 of 16 in bf16,
16 of 16 in fp32. A server whose answers depend on its other callers is not what ``auto`` should
give; ``--dtype bfloat16`` asks for it knowingly.
"""

from __future__ import annotations

from tuneforge.errors import ConfigError

CHOICES = ("auto", "float32", "bfloat16", "float16")


def serving_dtype(requested: str = "auto", device: str | None = None):
    """The torch dtype for ``requested`` (one of CHOICES) on ``device`` (None: CPU)."""
    import torch

    if requested not in CHOICES:
        raise ConfigError(f"dtype {requested!r}: choose one of {', '.join(CHOICES)}.")
    if requested != "auto":
        return getattr(torch, requested)
    return torch.bfloat16 if device and device.startswith("cuda") else torch.float32
