"""The output layer and cross-entropy of trained positions, a few rows at a time.

The full ``[tokens × vocab]`` logits of a step are the largest tensors of LoRA training on a small model
(SmolLM2-135M: 49,152 columns, 197 KB a token in fp32), and autograd keeps up to three of them: the
logits, their log-softmax and, in backward, its gradient. Here each chunk of rows gets its logits, its
loss and, when a gradient is wanted, its gradient at once (softmax − one-hot, the exact derivative of
cross-entropy); the chunk's logits are then dropped. Only ``[rows × hidden]`` gradients are kept for
backward, so nothing is recomputed and the step does the same matmuls as before.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

# Architectures whose causal-LM forward ends in ``logits = self.lm_head(hidden)`` with nothing after
# it (no softcapping, no logit scale), so the head can be applied here instead.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "gemma"})
CHUNK_BYTES = 64 * 2**20  # fp32 logits of one chunk


def plain_output_head(model) -> nn.Linear | None:
    """The model's output layer when the loss may apply it itself; None where that would change the
    result (an architecture that post-processes logits, a head wrapped by an adapter)."""
    if getattr(model.config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    head = model.get_output_embeddings()
    return head if type(head) is nn.Linear else None  # a LoRA-wrapped head is a subclass or wrapper


def chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_BYTES // (4 * vocab))


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T + bias, targets, reduction="sum")`` without the full logits.

    hidden: [rows, dim]; targets: [rows], every one a trained token (no ignore index). Logits are
    computed in fp32 (or the inputs' dtype if wider), as the loss did on full logits. The products run
    in the weight's dtype: a bf16 head (a bf16 base under mixed precision, whose hidden states the
    Trainer hands back in fp32) multiplies in bf16, as the model's own head would.
    """
    wants = [t is not None and t.requires_grad for t in (hidden, weight, bias)]
    if torch.is_grad_enabled() and any(wants):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets)
    return _loss_and_grads(hidden, weight, bias, targets, (False, False, False))[0]


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        loss, *grads = _loss_and_grads(hidden, weight, bias, targets, ctx.needs_input_grad[:3])
        ctx.grads = grads  # plain results, not graph inputs: nothing for autograd to check
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grads = [None if g is None else g * grad_loss.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return *grads, None


def _loss_and_grads(hidden, weight, bias, targets, wants):
    rows, vocab = hidden.shape[0], weight.shape[0]
    step = chunk_rows(vocab)
    exact = torch.promote_types(hidden.dtype, torch.float32)  # fp32 at least, as the loss always was
    loss = torch.zeros((), dtype=exact, device=hidden.device)
    grad_h = torch.empty_like(hidden) if wants[0] else None
    grad_w = torch.zeros_like(weight, dtype=exact) if wants[1] else None
    grad_b = torch.zeros_like(bias, dtype=exact) if wants[2] else None
    for start in range(0, rows, step):
        h, t = hidden[start : start + step].to(weight.dtype), targets[start : start + step]
        logits = (h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)).to(exact)
        lse = torch.logsumexp(logits, dim=-1)
        loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
        if not any(wants):
            continue
        # d(lse - logit_t)/d logits = softmax - one_hot(t), built in place over the chunk's logits.
        probs = logits.sub_(lse[:, None]).exp_()
        probs[torch.arange(len(t), device=t.device), t] -= 1
        g = probs.to(weight.dtype)
        if grad_h is not None:
            if grad_h.dtype == weight.dtype:
                torch.mm(g, weight, out=grad_h[start : start + step])
            else:
                grad_h[start : start + step] = g @ weight
        if grad_w is not None:
            grad_w.addmm_(probs.T, h.to(exact))
        if grad_b is not None:
            grad_b += probs.sum(0)
    as_param = [None if g is None else g.to(p.dtype) for g, p in ((grad_w, weight), (grad_b, bias))]
    return loss, grad_h, *as_param


@contextmanager
def head_skipped(head: nn.Linear):
    """The model's forward returns its last hidden states where it would return logits."""
    head.forward = _identity  # an instance attribute: nn.Module.__call__ looks it up before the class's
    try:
        yield
    finally:
        del head.forward


def _identity(hidden: torch.Tensor) -> torch.Tensor:
    return hidden
