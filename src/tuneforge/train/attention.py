"""Variable-length attention for padding-free batches on any device.

A packed row holds several examples back to back; ``cu_seq_lens_q`` (the same keyword flash-attention's
varlen path takes) marks where each starts. Running causal SDPA on each example's slice keeps attention
inside examples exactly and costs what the examples cost alone, unlike a block-diagonal mask over the
whole row, which pays for the full square. Everything else in a decoder layer is per token.

On a CPU in bf16, torch's flash-attention backward is slower than its fp32 one (one thread, 9 heads of
64: 4.7 against 1.5 ms at 128 tokens, ~equal at 512) while its bf16 forward is faster; so the bf16
forward's output and log-sum-exp are kept and the backward runs in fp32 on the upcast tensors (bf16_sdpa).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "tuneforge_varlen"


def varlen_sdpa(
    module,
    query,
    key,
    value,
    attention_mask=None,
    dropout: float = 0.0,
    scaling=None,
    cu_seq_lens_q=None,
    **kwargs,
):
    # query: [batch, heads, length, dim]; key/value may have fewer heads (grouped-query attention).
    if cu_seq_lens_q is None:
        causal = query.shape[2] == key.shape[2] and query.shape[2] > 1
        out = _sdpa(query, key, value, dropout, causal, scaling)
        return out.transpose(1, 2).contiguous(), None
    bounds = cu_seq_lens_q.tolist()
    pieces = [
        _sdpa(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout, True, scaling)
        for s, e in zip(bounds[:-1], bounds[1:], strict=True)
        if e > s
    ]
    out = torch.cat(pieces, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _sdpa(query, key, value, dropout: float, causal: bool, scaling):
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if query.device.type == "cpu" and query.dtype == torch.bfloat16 and wants_grad and not dropout:
        return BF16Attention.apply(query, key, value, causal, scaling)
    return F.scaled_dot_product_attention(
        query,
        key,
        value,
        dropout_p=dropout,
        is_causal=causal,
        scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1],
    )


class BF16Attention(torch.autograd.Function):
    """CPU flash attention: the bf16 forward, the backward in fp32 from the forward's log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value, causal: bool, scaling):
        groups = query.shape[1] // key.shape[1]
        k, v = (t.repeat_interleave(groups, dim=1) if groups > 1 else t for t in (key, value))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, k, v, 0.0, causal, scale=scaling
        )
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.causal, ctx.scaling, ctx.groups = causal, scaling, groups
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, out, lse = ctx.saved_tensors
        k, v = (t.repeat_interleave(ctx.groups, dim=1) if ctx.groups > 1 else t for t in (key, value))
        f = torch.float32
        gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad.to(f), query.to(f), k.to(f), v.to(f), out.to(f), lse, 0.0, ctx.causal, scale=ctx.scaling
        )
        if ctx.groups > 1:  # each key/value head served `groups` query heads: their gradients add up
            gk, gv = (g.unflatten(1, (-1, ctx.groups)).sum(2) for g in (gk, gv))
        return gq.to(query.dtype), gk.to(key.dtype), gv.to(value.dtype), None, None


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa)
    return NAME
