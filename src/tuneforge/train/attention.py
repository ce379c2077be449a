"""Variable-length attention for padding-free batches on any device.

A packed row holds several examples back to back; ``cu_seq_lens_q`` (the same keyword flash-attention's
varlen path takes) marks where each starts. Running causal SDPA on each example's slice keeps attention
inside examples exactly and costs what the examples cost alone, unlike a block-diagonal mask over the
whole row, which pays for the full square. Everything else in a decoder layer is per token.
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
    gqa = key.shape[1] != query.shape[1]
    if cu_seq_lens_q is None:
        causal = query.shape[2] == key.shape[2] and query.shape[2] > 1
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=None,
            dropout_p=dropout,
            is_causal=causal,
            scale=scaling,
            enable_gqa=gqa,
        )
        return out.transpose(1, 2).contiguous(), None
    bounds = cu_seq_lens_q.tolist()
    pieces = [
        F.scaled_dot_product_attention(
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            dropout_p=dropout,
            is_causal=True,
            scale=scaling,
            enable_gqa=gqa,
        )
        for s, e in zip(bounds[:-1], bounds[1:], strict=True)
        if e > s
    ]
    out = torch.cat(pieces, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa)
    return NAME
