"""Int8 linear layers for CPU serving (``--quantize int8``): less weight traffic per decode step.

At one request a decode step of a small model reads every weight once and does little arithmetic with
it, so its time is the weight traffic: SmolLM2-135M in float32 reads 0.54 GB a token. Int8 weights read
a quarter of that. What runs them fast on a CPU (measured on a 2-core EPYC without AVX-512, torch 2.13):

- ``aten._weight_int8pack_mm`` (int8 weights, fp32 activations, the "weight-only" kernel) is SLOWER
  than float32 there: 0.9 ms against 0.23 ms for a 1 x 576 @ 576 -> 1536 product, 24 against 17 ms for
  the 49152 x 576 output layer at one row; ``torch._int_mm`` (int8 x int8, exact int32 sums) is slower
  still on a CPU (a reference loop: 1.6 ms and 49 ms).
- fbgemm's dynamic int8 product (``quantized::linear_dynamic``: int8 weights per output channel,
  activations quantized to 8 bits per call) is the fast one: 1.8 ms against 13.6 ms for the output layer
  at one row, 8.6 against 55 ms at 16.

fbgemm quantizes the activations of the whole call with one scale, so a request's answer would depend
on the requests it shares a batch with. This layer makes the scale per ROW: each row is divided by its
own absolute maximum (every value then lies in [-1, 1]), one anchor row [1, -1, 0, …] is appended so the
call's range is exactly [-1, 1] whatever the batch holds, and the output rows are multiplied back by
their maxima. fbgemm sums in int32 (exact) and dequantizes each output element on its own, so a row's
result is the same alone and in any batch, as the float32 path's is (bf16's is not: precision.py).
Activations use fbgemm's 7-bit range (``reduce_range``): without VNNI its 8-bit products can saturate.
7 bits alone cost SmolLM2-135M +14% perplexity, so each row goes in as two: its part on fbgemm's grid
and the remainder, scaled up and put on the grid too (+0.1%; at a few rows the product is bound by
weight traffic, so the second row is nearly free). Every value lies on the grid, so fbgemm's vector
code and its scalar tail (whose extent moves with the batch size) round it alike.

LoRA: only base layers are replaced; peft's lora layers keep their fp32 ``lora_A``/``lora_B`` and add
their delta on top of the int8 product (batches of several adapters included). A tied output layer gets
its own int8 copy; the embedding keeps its fp32 weight for lookups. Untied fp32 weights are freed.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from tuneforge.errors import ConfigError

log = logging.getLogger(__name__)


# fbgemm's quantization step for a call whose values span exactly [-1, 1] with the 7-bit range (0..127)
STEP = 2 / 127


class SharedInput:
    """The int8 form of the last input, shared by the layers of one model: q/k/v (and gate/up) take the
    same tensor, so it is prepared once for them. Holding the tensor keeps its identity unique; the
    models served never change a layer input in place between two layers reading it."""

    def __init__(self):
        self.x: torch.Tensor | None = None
        self.prepared: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self.anchors: dict[int, torch.Tensor] = {}

    def get(self, x: torch.Tensor, in_features: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if x is not self.x:
            self.x, self.prepared = x, self._prepare(x, in_features)
        return self.prepared

    def _prepare(self, x: torch.Tensor, in_features: int):
        """``[coarse; fine; anchor]`` rows for fbgemm, each row's maximum, and the row count.

        Each row is divided by its own absolute maximum, then split into a coarse part on fbgemm's grid
        and the remainder, scaled up to fill [-1, 1] again and rounded to the grid in its turn: the error
        left is ``STEP**2 / 4`` of the row's maximum. The anchor row [1, -1, 0, …] pins the call's range
        to [-1, 1] whatever else is in the batch."""
        rows = x.reshape(-1, in_features).float()
        peak = torch.linalg.vector_norm(rows, float("inf"), dim=1, keepdim=True).clamp_min_(1e-30)
        unit = rows / peak
        coarse = torch.round(unit * (1 / STEP)).clamp_(-63, 63).mul_(STEP)
        # on the grid too: fbgemm's own rounding of an off-grid value differs between its vector code and
        # its scalar tail (whose elements depend on the batch size and threads), which made a row's result
        # differ in the last bit in some batches; a value on the grid rounds the same way in both.
        fine = torch.round((unit - coarse).mul_(2 / STEP * (1 / STEP))).clamp_(-63, 63).mul_(STEP)
        anchor = self.anchors.get(in_features)
        if anchor is None:
            anchor = self.anchors[in_features] = torch.zeros(1, in_features)
            anchor[0, 0], anchor[0, -1] = 1.0, -1.0
        return torch.cat([coarse, fine, anchor]), peak, rows.shape[0]


class Int8Linear(nn.Module):
    """``y = x @ W.T + b`` with W held as fbgemm-packed int8, one scale per output channel."""

    def __init__(self, linear: nn.Linear, shared: SharedInput):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.shared = shared
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        zero = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # torch 2.13 marks quantized tensors deprecated; fbgemm needs one
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        # added after the per-row rescale, so the bias is not scaled with the rows
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both, peak, m = self.shared.get(x, self.in_features)
        y = torch.ops.quantized.linear_dynamic(both, self._packed, True)
        out = torch.add(y[:m], y[m : 2 * m], alpha=STEP / 2).mul_(peak)
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _adapter_modules(model: nn.Module) -> set[int]:
    """ids of the modules that belong to LoRA adapters (peft's ``lora_A``, ``lora_B``, …): they stay fp32."""
    ids: set[int] = set()
    for module in model.modules():
        for attr in getattr(module, "adapter_layer_names", ()):
            part = getattr(module, attr, None)
            if isinstance(part, nn.Module):
                ids.update(id(m) for m in part.modules())
    return ids


def quantize_linears(model: nn.Module, device: torch.device) -> int:
    """Replace every float base ``nn.Linear`` of ``model`` (output layer included) by an ``Int8Linear``,
    in place; returns how many."""
    if device.type != "cpu":
        raise ConfigError(
            f"--quantize int8 runs int8 linear layers on the CPU; this model is on {device}. Serve it on "
            "the GPU without --quantize (bf16 is the default there), or pass --device cpu."
        )
    if not hasattr(torch.ops.quantized, "linear_dynamic") or not torch.backends.quantized.supported_engines:
        raise ConfigError("--quantize int8: this torch build has no quantized CPU engine; serve without it.")
    skip = _adapter_modules(model)
    # (parent, name) pairs only: holding the layers themselves would keep every fp32 weight alive until
    # the end; replaced one at a time, the peak is the fp32 model plus one layer's int8 copy.
    targets = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear) and id(child) not in skip and child.weight.is_floating_point()
    ]
    shared = SharedInput()
    for parent, name in targets:
        setattr(parent, name, Int8Linear(getattr(parent, name), shared))
    # The loader maps the safetensors file, and every page read stays resident while any tensor still
    # views the mapping: copying out what stays float (the embedding, norms, LoRA) lets it go. Measured
    # on SmolLM2-135M: 0.76 GB resident after a forward, against 1.17 GB without the copies.
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
    log.info("replaced %d linear layers by int8 ones", len(targets))
    return len(targets)
