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
own absolute maximum and scaled to just under 63.5, one anchor row [63.5, -63.5, 0, …] is put first so
the call's range is exactly [-63.5, 63.5] (fbgemm's scale then exactly 1) whatever the batch holds, and
the output rows are multiplied back by their maxima. fbgemm sums in int32 (exact) and dequantizes each
output element on its own, so a row's result is the same alone and in any batch, as the float32 path's
is (bf16's is not: precision.py). Activations use fbgemm's 7-bit range (``reduce_range``): without VNNI
its 8-bit products can saturate. 7 bits alone cost SmolLM2-135M +14% perplexity, so each row goes in as
two: its integer part and the remainder, scaled up and rounded to an integer too (+0.1%; at a few rows
the product is bound by weight traffic, so the second row is nearly free). Every value is an integer,
so fbgemm's vector code and its scalar tail (whose extent moves with the batch size) round it alike.

Per step, the int8 path is cheap only if little runs around the products: at one row a decode step of
SmolLM2-135M was 211 fbgemm calls, each with ~15 small ops to prepare its input and 5 after; only ~40% of
the int8 step's CPU time was fbgemm itself. Layers reading the same input (q/k/v, gate/up; ``FUSED``) now
share one product (``Int8Product``: weights stacked along the outputs, so each layer's outputs are those
it gets alone), 121 calls a step, each input prepared in 8 ops into a reused buffer (performance.md#int8).

LoRA: only base layers are replaced; peft's lora layers keep their fp32 ``lora_A``/``lora_B`` and add
their delta on top of the int8 product (batches of several adapters included). A tied output layer gets
its own int8 copy; the embedding keeps its fp32 weight for lookups. Untied fp32 weights are freed.
"""

from __future__ import annotations

import itertools
import logging
import warnings

import torch
from torch import nn

from tuneforge.errors import ConfigError

log = logging.getLogger(__name__)


# The activations go to fbgemm as integers: each row's coarse and fine parts lie in [-63, 63] and the
# anchor row holds +-63.5, so fbgemm's scale (7-bit range, 0..127) is exactly 1 and its zero point 64,
# and every value quantizes exactly. A row divided by its maximum is scaled by HALF and its remainder by
# FINE, both a hair under 63.5 and 127 so that no value can round to 64 (no clamp needed).
HALF = 63.4999
FINE = 126.999

# Sibling layers that read the same input tensor, fused into one int8 product (names after peft's
# ``base_layer`` is looked through): Llama, Mistral, Qwen2, Gemma and their kind.
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class SharedInput:
    """The int8 form of the last input, shared by the layers of one model: layers reading the same tensor
    (products of different groups, a layer called twice) prepare it once. Holding the tensor keeps its
    identity unique; the models served never change a layer input in place between two layers reading
    it. The rows are written into one buffer per input width, reused from call to call (a decode step
    prepares ~120 inputs: allocating each was a good part of the cost)."""

    def __init__(self):
        self.x: torch.Tensor | None = None
        self.prepared: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self.buffers: dict[int, torch.Tensor] = {}

    def get(self, x: torch.Tensor, in_features: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if x is not self.x:
            self.x, self.prepared = x, self._prepare(x, in_features)
        return self.prepared

    def _buffer(self, in_features: int, rows: int) -> torch.Tensor:
        """``[anchor; 2 x rows]`` rows of ``in_features``; the anchor [63.5, -63.5, 0, …] stays in row 0."""
        buf = self.buffers.get(in_features)
        if buf is None or buf.shape[0] < 2 * rows + 1:
            # a normal tensor even when first called under inference mode: written in place in both
            with torch.inference_mode(False):
                buf = torch.zeros(2 * rows + 1, in_features)
                buf[0, 0], buf[0, -1] = 63.5, -63.5
            self.buffers[in_features] = buf
        return buf

    def _prepare(self, x: torch.Tensor, in_features: int):
        """``[anchor; coarse; fine]`` rows for fbgemm, each row's maximum, and the row count.

        Each row is divided by its own absolute maximum and scaled by HALF; its coarse part is that rounded
        to an integer, its fine part the remainder times FINE, rounded in its turn: the error left is
        ``1 / (2 * HALF * FINE)`` of the row's maximum (1/16,000). The anchor row pins the call's range to
        [-63.5, 63.5] whatever else is in the batch. The prepared rows are valid until the next call."""
        rows = x.reshape(-1, in_features)
        if rows.dtype != torch.float32:
            rows = rows.float()
        if rows.requires_grad:  # written into the buffer with out=: no autograd through int8 rounding
            rows = rows.detach()
        m = rows.shape[0]
        buf = self._buffer(in_features, m)
        coarse, fine = buf[1 : m + 1], buf[m + 1 : 2 * m + 1]
        # abs().amax(): linalg.vector_norm(inf) took 56 us of CPU for 32 x 576 rows, this 7 (1 thread)
        peak = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-30)
        torch.div(rows, peak, out=fine).mul_(HALF)
        # integers, so on fbgemm's grid: its own rounding of an off-grid value differs between its vector
        # code and its scalar tail (whose elements depend on the batch size and threads), which made a
        # row's result differ in the last bit in some batches; a value on the grid rounds the same in both.
        torch.round(fine, out=coarse)
        fine.sub_(coarse).mul_(FINE).round_()
        return buf[: 2 * m + 1], peak, m


class Int8Product:
    """The int8 weights of one or more linear layers that read the same input, stacked along their
    outputs: one fbgemm call (one activation quantization and packing inside it) serves all of them.
    fbgemm-packed int8, one scale per output channel, so a layer's outputs are those it would get alone."""

    def __init__(self, linears: list[nn.Linear], shared: SharedInput):
        self.in_features = linears[0].in_features
        self.shared = shared
        self.bounds = list(itertools.accumulate((lin.out_features for lin in linears), initial=0))
        weight = torch.cat([lin.weight.detach().float() for lin in linears])
        scale = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # torch 2.13 marks quantized tensors deprecated; fbgemm needs one
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
            # the activations arrive multiplied by HALF: fbgemm's per-element dequantization divides it out
            qweight = torch._make_per_channel_quantized_tensor(qweight.int_repr(), scale / HALF, zero, 0)
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        # added after the per-row rescale, so the bias is not scaled with the rows
        biases = [lin.bias for lin in linears]
        self.bias = None
        if any(b is not None for b in biases):
            self.bias = torch.cat(
                [
                    torch.zeros(lin.out_features) if b is None else b.detach().float()
                    for lin, b in zip(linears, biases, strict=True)
                ]
            )
        self.x: torch.Tensor | None = None
        self.pending: dict[int, torch.Tensor] = {}

    def output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Layer ``index``'s output for ``x``: the product is run for the first layer asking for this
        input, and each layer's part handed out once (a layer asking twice, or for another input, runs
        it again: never a stale result)."""
        if x is not self.x or index not in self.pending:
            out = self._run(x)
            if len(self.bounds) == 2:
                return out
            self.x = x
            self.pending = {i: out[..., a:b] for i, (a, b) in enumerate(itertools.pairwise(self.bounds))}
        part = self.pending.pop(index)
        if not self.pending:  # all handed out: hold neither the input nor the output (a long prefill's)
            self.x = None
        return part

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        both, peak, m = self.shared.get(x, self.in_features)
        y = torch.ops.quantized.linear_dynamic(both, self.packed, True)
        out = torch.add(y[1 : m + 1], y[m + 1 :], alpha=1 / FINE).mul_(peak)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], self.bounds[-1])


class Int8Linear(nn.Module):
    """``y = x @ W.T + b`` with W in int8: a slice of an ``Int8Product`` (of its own or shared with the
    sibling layers that read the same input)."""

    def __init__(self, product: Int8Product, index: int = 0):
        super().__init__()
        self.product, self.index = product, index
        self.in_features = product.in_features
        self.out_features = product.bounds[index + 1] - product.bounds[index]

    @classmethod
    def fused(cls, linears: list[nn.Linear], shared: SharedInput) -> list[Int8Linear]:
        product = Int8Product(linears, shared)
        return [cls(product, i) for i in range(len(linears))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product.output(x, self.index)

    def extra_repr(self) -> str:
        shared = len(self.product.bounds) - 1
        fused = f", fused with {shared - 1} more" if shared > 1 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{fused}"


def _adapter_modules(model: nn.Module) -> set[int]:
    """ids of the modules that belong to LoRA adapters (peft's ``lora_A``, ``lora_B``, …): they stay fp32."""
    ids: set[int] = set()
    for module in model.modules():
        for attr in getattr(module, "adapter_layer_names", ()):
            part = getattr(module, attr, None)
            if isinstance(part, nn.Module):
                ids.update(id(m) for m in part.modules())
    return ids


def _groups(model: nn.Module, skip: set[int]) -> list[list[tuple[nn.Module, str]]]:
    """The float base ``nn.Linear`` layers of ``model`` as (parent, name) pairs, grouped: siblings of one
    ``FUSED`` family with the same input width together (in model order), every other layer alone. Pairs
    only: holding the layers would keep every fp32 weight alive until the end; replaced a group at a time,
    the peak is the fp32 model plus one group's int8 copy."""
    groups: dict[tuple, list[tuple[nn.Module, str]]] = {}
    for path, parent in model.named_modules():
        for name, child in parent.named_children():
            if not isinstance(child, nn.Linear) or id(child) in skip or not child.weight.is_floating_point():
                continue
            # peft wraps a layer as ``q_proj.base_layer``: the role is the wrapper's name
            owner, _, role = path.rpartition(".") if name == "base_layer" else (path, "", name)
            family = next((i for i, names in enumerate(FUSED) if role in names), None)
            key = (owner, family, child.in_features) if family is not None else (path, name)
            groups.setdefault(key, []).append((parent, name))
    return list(groups.values())


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
    groups = _groups(model, _adapter_modules(model))
    shared = SharedInput()
    for group in groups:
        layers = Int8Linear.fused([getattr(parent, name) for parent, name in group], shared)
        for (parent, name), layer in zip(group, layers, strict=True):
            setattr(parent, name, layer)
    # The loader maps the safetensors file, and every page read stays resident while any tensor still
    # views the mapping: copying out what stays float (the embedding, norms, LoRA) lets it go. Measured
    # on SmolLM2-135M: 0.76 GB resident after a forward, against 1.17 GB without the copies.
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
    count = sum(len(g) for g in groups)
    log.info("replaced %d linear layers by int8 ones in %d products", count, len(groups))
    return count
