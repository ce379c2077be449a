"""Linear layers with their weights pre-packed for oneDNN, for CPU serving in float32.

Measured on this 2-core AVX-512 CPU (torch 2.13, fp32, 16 rows): ``F.linear`` through MKL runs
SmolLM2's 49152 x 576 output layer in 15.7 ms and a 1536 x 576 MLP projection in 0.21 ms; the same
products on weights reordered once into oneDNN's blocked layout take 3.5 ms and 0.08 ms. Decode
steps are small-row matmuls against every weight of the model, which is the case the packed layout
is made for (it is what ``torch.compile`` does on CPU with weight freezing, without the compile).
Same float32 arithmetic, so answers stay those of the unpacked model up to summation order.

The layer keeps its class (an ``nn.Linear`` subclass, so peft and isinstance checks still hold) and
its ``weight`` parameter; ``forward`` reads the packed copy while its model's ``LayoutSwitch`` says
``packed``, else runs MKL on the plain weight: at one row MKL is the faster one (threads.py measures
which, per batch size, while serving).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class LayoutSwitch:
    """Which product the packed layers of one model run: one flag shared by all of them, flipped by the
    engine between steps (never during one)."""

    packed: bool = True

    def set(self, packed: bool) -> None:
        self.packed = packed


class PackedLinear(nn.Linear):
    packed: torch.Tensor
    switch: LayoutSwitch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.switch.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack_linears(model: nn.Module, rows_hint: int = 16, switch: LayoutSwitch | None = None) -> int:
    """Switch every float32 CPU ``nn.Linear`` in ``model`` to a packed one (all following ``switch``);
    returns how many."""
    if not available():
        return 0
    switch = switch or LayoutSwitch()
    count = 0
    for module in model.modules():
        if type(module) is not nn.Linear:
            continue
        weight = module.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            continue
        module.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)
        module.switch = switch
        module.__class__ = PackedLinear
        count += 1
    return count
