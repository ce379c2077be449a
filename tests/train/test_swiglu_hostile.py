"""The lean gated MLP (train/swiglu.py) is switched only where it is exact: not on a look-alike class of
a model's remote code (same name, other forward), not over a forward something else already wraps."""

from __future__ import annotations

import torch
from torch import nn


class LlamaMLP(nn.Module):
    """Named like transformers' class (as remote code may name its own) but gating the other way round."""

    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 4)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.up_proj(x)) * self.gate_proj(x))


def test_a_look_alike_class_keeps_its_own_forward():
    from tuneforge.train.swiglu import use_lean_swiglu

    torch.manual_seed(0)
    mlp, x = LlamaMLP(), torch.randn(2, 4, requires_grad=True)
    expected = mlp(x)
    assert use_lean_swiglu(mlp) == 0
    assert torch.equal(mlp(x), expected)


def test_a_wrapped_forward_stays_wrapped(tiny_models):
    from transformers import AutoModelForCausalLM

    from tuneforge.train.swiglu import use_lean_swiglu

    model = AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"]))
    mlp = model.model.layers[0].mlp
    calls = []
    inner = mlp.forward

    def hooked(*args, **kwargs):  # as accelerate's add_hook_to_module wraps a module's forward
        calls.append(1)
        return inner(*args, **kwargs)

    mlp.forward = hooked
    assert use_lean_swiglu(model) == model.config.num_hidden_layers - 1
    model(input_ids=torch.tensor([[5, 6, 7]]))
    assert calls == [1]


def test_bfloat16_gradients_equal_the_plain_mlps_bit_for_bit(tiny_models):
    """A derivative spelt out in elementwise ops rounds after each: ~1% off in bfloat16 LoRA gradients."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.train.swiglu import use_lean_swiglu

    ids = torch.randint(3, 200, (2, 24), generator=torch.Generator().manual_seed(1))
    grads = []
    for lean in (False, True):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"]), dtype=torch.bfloat16)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(model, lora)
        if lean:
            assert use_lean_swiglu(model) == model.config.num_hidden_layers
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert torch.equal(grads[1][name], g), name
