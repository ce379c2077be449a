"""Attention for the slot cache, registered with transformers' ``AttentionInterface``.

Measured on this CPU (torch 2.13, 2 threads, keys as strided views of the slot cache): PyTorch's
``scaled_dot_product_attention`` takes 1.5–11 ms per call for one decode query with a boolean mask,
while two matmuls and a softmax take ~60 µs. Decode is therefore written out here; prefill (many
queries) goes to SDPA on contiguous keys with an additive mask, its fast path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "tuneforge_slots"


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``query`` [B, H, q, D]; ``key``/``value`` [B, Hkv, L, D]; ``attention_mask`` additive [B, 1, q, L]."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim**-0.5
    if q_len == 1:
        # Grouped-query heads become rows of one matmul per KV head: no repeated keys.
        q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
        scores = torch.matmul(q, key.transpose(-1, -2)) * scale
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, 0:1, :]
        out = torch.matmul(scores.softmax(-1), value).reshape(batch, heads, 1, dim)
    else:
        if kv_heads != heads:
            key = key.repeat_interleave(heads // kv_heads, dim=1)
            value = value.repeat_interleave(heads // kv_heads, dim=1)
        out = F.scaled_dot_product_attention(
            query, key.contiguous(), value.contiguous(), attn_mask=attention_mask, scale=scale
        )
    return out.transpose(1, 2).contiguous(), None


def install(model) -> bool:
    """Switch ``model`` (or the base under a peft wrapper) to slot attention; False if it cannot."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, slot_attention)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(inner, "_can_set_attn_implementation", lambda: False)():
        return False
    inner.set_attn_implementation(NAME)
    return inner.config._attn_implementation == NAME
