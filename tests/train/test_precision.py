"""Precision `auto` follows the CPU (bf16 mixed where AMX multiplies bf16, fp32 elsewhere), and a bf16
job on a CPU trains: a bf16 base, fp32 LoRA weights, the chunked head and the attention backward in step."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.support.trainhelp import losses, run, tiny_spec
from tuneforge.spec import parse_spec
from tuneforge.train import model as train_model
from tuneforge.train.attention import _sdpa
from tuneforge.train.chunked_loss import linear_cross_entropy_sum


@pytest.mark.parametrize("amx", [True, False])
def test_auto_is_bf16_where_the_cpu_has_amx_and_the_warning_says_why(
    amx, tiny_llama, memo_data, monkeypatch, caplog
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_model, "cpu_has_bf16_matmul", lambda: amx)
    auto = parse_spec(tiny_spec(tiny_llama, memo_data, train__precision="auto"))
    assert train_model.preflight(auto).dtype_name == ("bfloat16" if amx else "float32")
    assert "bfloat16" not in caplog.text  # what auto picks is never warned about
    asked = parse_spec(tiny_spec(tiny_llama, memo_data, train__precision="bf16"))
    with caplog.at_level(logging.WARNING):
        assert train_model.preflight(asked).dtype_name == "bfloat16"
    warned = "emulated and several times slower than fp32" in caplog.text
    assert warned is not amx


def test_the_probe_reads_the_cpus_amx_flag():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split()
    assert train_model.cpu_has_bf16_matmul() is ("amx_tile" in flags)


def test_bf16_head_on_fp32_hidden_states_equals_the_models_own_head():
    """A bf16 base hands its hidden states back in fp32 (the Trainer's autocast output); the loss
    multiplies in bf16 as the model's head would, and the hidden states' gradient comes back in fp32."""
    torch.manual_seed(0)
    hidden = torch.randn(40, 16, requires_grad=True)
    weight = torch.randn(300, 16).to(torch.bfloat16)
    targets = torch.randint(0, 300, (40,))
    loss = linear_cross_entropy_sum(hidden, weight, None, targets)
    loss.backward()
    ref_hidden = hidden.detach().clone().requires_grad_()
    ref = F.cross_entropy((ref_hidden.to(torch.bfloat16) @ weight.T).float(), targets, reduction="sum")
    ref.backward()
    torch.testing.assert_close(loss, ref)
    assert hidden.grad.dtype == torch.float32
    torch.testing.assert_close(hidden.grad, ref_hidden.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kv_heads", [2, 6])
def test_bf16_attention_backward_in_fp32_is_closer_than_torchs(kv_heads):
    torch.manual_seed(0)
    q = torch.randn(1, 6, 50, 32, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, kv_heads, 50, 32, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, kv_heads, 50, 32, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(1, 6, 50, 32, dtype=torch.bfloat16)
    gqa = kv_heads != 6

    def grads(fn, *tensors):
        tensors = [t.detach().clone().requires_grad_() for t in tensors]
        out = fn(*tensors)
        out.backward(grad.to(out.dtype))
        return out, [t.grad for t in tensors]

    ours, ours_g = grads(lambda *t: _sdpa(*t, 0.0, True, None), q, k, v)
    plain = lambda *t: F.scaled_dot_product_attention(*t, is_causal=True, enable_gqa=gqa)  # noqa: E731
    torchs, torchs_g = grads(plain, q, k, v)
    exact, exact_g = grads(plain, q.float(), k.float(), v.float())
    assert torch.equal(ours, torchs)  # the same bf16 forward

    def error(g, ref):
        return ((g.float() - ref).abs().max() / ref.abs().max()).item()

    for mine, ref in zip(ours_g, exact_g, strict=True):
        assert mine.dtype == torch.bfloat16 and mine.shape == ref.shape and error(mine, ref) < 1e-2
    # the fp32 backward rounds once, at the end: closer to exact than torch's bf16 backward
    ours_err = sum(map(error, ours_g, exact_g))
    torchs_err = sum(map(error, torchs_g, exact_g))
    assert ours_err < 0.9 * torchs_err, (ours_err, torchs_err)


def test_a_bf16_job_on_the_cpu_trains_fp32_adapters_on_a_bf16_base(tiny_llama, memo_data, tmp_path):
    from transformers import TrainerCallback

    class Keep(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kw):
            self.model = model

    keep = Keep()
    spec = tiny_spec(tiny_llama, memo_data, train__precision="bf16", train__max_steps=4)
    result = run(spec, tmp_path / "job", callbacks=[keep])
    started = json.loads((result.folder / "events.jsonl").read_text().splitlines()[0])
    assert started["dtype"] == "bfloat16" and started["precision"].startswith("bfloat16 mixed precision (CPU")
    trained = {p.dtype for p in keep.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in keep.model.parameters() if not p.requires_grad}
    assert trained == {torch.float32} and frozen == {torch.bfloat16}
    layers = [m for m in keep.model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    flags = [m.cast_input_dtype_enabled for m in layers]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert flags and not any(flags)  # no cast under autocast: the product is bf16 either way
    assert all(flags)  # outside it (GRPO's generation) peft casts the bf16 input to the fp32 adapter
    curve = losses(result.folder)
    assert len(curve) == 4 and all(torch.isfinite(torch.tensor(curve))) and curve[-1] < curve[0]


def test_a_bf16_full_finetune_on_the_cpu_keeps_its_trained_weights_in_fp32(tiny_llama, memo_data, tmp_path):
    from tuneforge.train.model import Runtime, load_model

    spec = parse_spec(tiny_spec(tiny_llama, memo_data, finetuning="full", train__precision="bf16"))
    model, _ = load_model(spec, Runtime("cpu", "bfloat16"), packed=True)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    # loaded as published: not rounded to bf16 on the way (an fp32 base keeps every bit)
    published, _ = load_model(spec, Runtime("cpu", "float32"), packed=True)
    theirs = dict(published.named_parameters())
    assert all(torch.equal(p, theirs[name]) for name, p in model.named_parameters())


def test_a_bf16_grpo_job_on_the_cpu_generates_outside_autocast(tmp_path):
    """trl's GRPO samples its completions without autocast: the bf16 base's outputs must still meet the fp32
    adapters in one dtype (the adapters' input cast is off only under autocast)."""
    from tests.conftest import write
    from tests.support.rlhelp import TEMPLATE, digits_model, sums

    spec = tiny_spec(
        digits_model(tmp_path / "m"),
        write(tmp_path / "sums.json", sums()),
        method="grpo",
        train__precision="bf16",
        train__max_steps=1,
        train__batch_size=8,
        data__chat_template=TEMPLATE,
        grpo={"num_generations": 8, "max_completion_length": 1},
    )
    result = run(spec, tmp_path / "job")
    assert (result.folder / "final" / "adapter_model.safetensors").exists()
