"""Which floating-point type to serve a model in.

On CUDA, bfloat16. On a CPU it depends on the chip: where it has native bf16 dot products (AVX512-BF16,
AMX, Arm BF16), a bf16 matmul of serving shapes reads half the bytes and runs 2–5x faster than fp32
(measured here: SmolLM2-135M's output layer for 16 rows, 15.2 ms fp32 against 2.7 ms bf16; a whole
decode step of 16 requests, 75 ms against 32 ms); where it has not, bf16 is emulated and ~5x slower.
CPU flags are not a reliable guide (a torch build may lack the kernel, a VM may hide a flag), so
``auto`` times one matmul of each kind at load, ~0.1 s, and serves in the faster one.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time

from tuneforge.errors import ConfigError

log = logging.getLogger(__name__)

CHOICES = ("auto", "float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of a [16 x 1024] @ [1024 x 16384] matmul on this CPU (median of 5)."""
    import torch
    import torch.nn.functional as F

    weight = torch.randn(16384, 1024)
    x = torch.randn(16, 1024)
    timings = {}
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            w, a = weight.to(dtype), x.to(dtype)
            F.linear(a, w)  # first call: kernel selection, page faults
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                F.linear(a, w)
                runs.append(time.perf_counter() - started)
            timings[dtype] = statistics.median(runs)
    return timings[torch.float32] / timings[torch.bfloat16]


def serving_dtype(requested: str = "auto", device: str | None = None):
    """The torch dtype for ``requested`` (one of CHOICES) on ``device`` (None: CPU)."""
    import torch

    if requested not in CHOICES:
        raise ConfigError(f"dtype {requested!r}: choose one of {', '.join(CHOICES)}.")
    if requested != "auto":
        return getattr(torch, requested)
    if device and device.startswith("cuda"):
        return torch.bfloat16
    speedup = cpu_bf16_speedup()
    # A clear margin only: near-equal speed is not worth bf16's coarser numbers.
    chosen = torch.bfloat16 if speedup >= 1.3 else torch.float32
    log.info("dtype auto: bf16 matmul is %.1fx the speed of fp32 on this CPU; serving in %s", speedup, chosen)
    return chosen
