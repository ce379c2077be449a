"""The gated MLP's ``silu(gate) * up`` as one autograd step that keeps only its two inputs.

In a LoRA step most resident memory is what autograd keeps for backward, and most of that is the MLP's
intermediate-width tensors (SmolLM2-135M: 1,536 wide against a 576-wide hidden state). Written as
``act_fn(gate_proj(x)) * up_proj(x)``, autograd keeps ``gate`` for the SiLU's backward and ``silu(gate)``
and ``up`` for the product's: three of them per layer and token. Here the product keeps ``gate`` and
``up`` and recomputes ``silu(gate)`` in backward (one elementwise pass), so a third of those go: 6 KB a
token and layer in fp32 (184 KB a token over SmolLM2's 30 layers). The forward is the same arithmetic
(``F.silu(gate) * up``) and the backward runs the ops autograd runs (SiLU's own backward kernel), so
losses and gradients are equal bit for bit, in bfloat16 too.

Only MLP classes whose forward is exactly ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with a SiLU
activation are switched: listed by name *and* defined by transformers (a model's remote code may name its
own class ``LlamaMLP`` with another forward), their forward not already wrapped on the module (accelerate's
hooks and other patches set ``module.forward``; replacing it would drop them). Others keep their own.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

SILU_CLASSES = frozenset({"SiLU", "SiLUActivation"})  # torch's and transformers' (ACT2FN["silu"])
SILU_MODULES = frozenset({"torch.nn.modules.activation", "transformers.activations"})
# Their forward is ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` (transformers 5.x).
GATED_MLP_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "Olmo2MLP"})


class SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        # The very ops autograd runs for ``F.silu(gate) * up``: the product's two gradients, then SiLU's own
        # backward kernel. Spelling the derivative out in elementwise ops instead rounds after each one:
        # in bfloat16 that moved LoRA gradients by ~1% against the plain MLP's.
        grad_up = grad * F.silu(gate) if ctx.needs_input_grad[1] else None
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
        return grad_gate, grad_up


def _forward(self, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return self.down_proj(SiluMul.apply(gate, up))
    return self.down_proj(F.silu(gate) * up)


def use_lean_swiglu(model: nn.Module) -> int:
    """Switch the gated SiLU MLPs of ``model`` to the lean product; returns how many."""
    count = 0
    for module in model.modules():
        if _exact(module):
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count


def _exact(module: nn.Module) -> bool:
    """Whether ``module`` computes exactly ``down_proj(silu(gate_proj(x)) * up_proj(x))`` in its forward."""
    cls, act = type(module), type(getattr(module, "act_fn", None))
    return (
        cls.__name__ in GATED_MLP_CLASSES
        and getattr(cls.forward, "__module__", "").startswith("transformers.models.")
        and "forward" not in vars(module)
        and act.__name__ in SILU_CLASSES
        and act.__module__ in SILU_MODULES
    )
