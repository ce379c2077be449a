"""The lean gated MLP (train/swiglu.py): the same loss and gradients, a third less kept for backward."""

from __future__ import annotations

import pytest
import torch


def _lora_model(folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config)


def _step(model, ids):
    """Loss, LoRA gradients and the bytes autograd kept for backward of one forward/backward."""
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, sum(kept)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lean_swiglu_keeps_loss_and_gradients_and_less_memory(tiny_models, arch):
    from tuneforge.train.swiglu import use_lean_swiglu

    ids = torch.randint(3, 200, (2, 48), generator=torch.Generator().manual_seed(1))
    plain, lean = _lora_model(tiny_models[arch]), _lora_model(tiny_models[arch])
    config = plain.config
    assert use_lean_swiglu(lean) == config.num_hidden_layers
    loss_a, grads_a, kept_a = _step(plain, ids)
    loss_b, grads_b, kept_b = _step(lean, ids)
    assert loss_a == loss_b  # the same forward arithmetic
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-5, atol=1e-7, msg=name)
    # silu(gate) is no longer kept: one [tokens x intermediate] fp32 tensor per layer
    saved = config.num_hidden_layers * ids.numel() * config.intermediate_size * 4
    assert kept_a - kept_b == saved, (kept_a, kept_b, saved)


def test_only_gated_silu_mlps_are_switched(tiny_models):
    from transformers import AutoModelForCausalLM

    from tuneforge.train.swiglu import use_lean_swiglu

    gpt2 = AutoModelForCausalLM.from_pretrained(str(tiny_models["gpt2"]))
    assert use_lean_swiglu(gpt2) == 0
    llama = AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"]))
    llama.model.layers[0].mlp.act_fn = torch.nn.GELU()  # another activation: its own forward stays
    assert use_lean_swiglu(llama) == llama.config.num_hidden_layers - 1
    with torch.no_grad():  # no autograd: the plain product, no saved tensors
        llama(input_ids=torch.tensor([[5, 6, 7]]))
