"""Next-token choice for a batch whose rows each have their own sampling options."""

from __future__ import annotations

import torch

from .base import SamplingParams


def _penalise(row: torch.Tensor, params: SamplingParams, generated: list[int]) -> torch.Tensor:
    """OpenAI's frequency/presence penalties and the HF repetition penalty, over generated tokens."""
    if not generated:
        return row
    ids = torch.tensor(generated, device=row.device)
    uniq, counts = ids.unique(return_counts=True)
    row = row.clone()
    if params.repetition_penalty != 1.0:
        picked = row[uniq]
        row[uniq] = torch.where(
            picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty
        )
    row[uniq] -= params.frequency_penalty * counts.to(row.dtype) + params.presence_penalty
    return row


def _filter(row: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < row.numel():
        kth = torch.topk(row, top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(row, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
        row = row.clone()
        row[order[drop]] = float("-inf")
    return row


def _sample_row(
    row: torch.Tensor, p: SamplingParams, generated: list[int], generator: torch.Generator | None
) -> int:
    if p.frequency_penalty or p.presence_penalty or p.repetition_penalty != 1.0:
        row = _penalise(row, p, generated)
    if p.greedy:
        return int(row.argmax())
    probs = _filter(row / p.temperature, p.top_k, p.top_p).softmax(-1)
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("the next-token probabilities are not finite (the model's logits hold inf or nan)")
    return int(torch.multinomial(probs, 1, generator=generator))


def _logprob_info(row: torch.Tensor, token: int, k: int) -> dict:
    lp = row.log_softmax(-1)
    top = torch.topk(lp, k) if k else None
    return {
        "logprob": float(lp[token]),
        "top": list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top else [],
    }


def choose_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generated: list[list[int]],
    generators: list[torch.Generator | None],
) -> tuple[list[int], list[dict | None], list[str | None]]:
    """One token per row; plus, for rows that asked for logprobs, the chosen token's and the top k; plus,
    for a row whose choice failed, why (its token is -1). A failure stays in its row: one request's
    numbers must not abort the others in the batch."""
    logits = logits.float()
    n = len(params)
    errors: list[str | None] = [None] * n
    simple = all(
        p.greedy and p.frequency_penalty == 0 and p.presence_penalty == 0 and p.repetition_penalty == 1.0
        for p in params
    )
    if simple:
        # max's indices: the first maximum, as argmax's, in a third of its time (32 x 49152: 1.0 vs 3.5 ms)
        chosen = logits.max(-1).indices.tolist()
    else:
        chosen = [-1] * n
        for i, p in enumerate(params):
            try:
                chosen[i] = _sample_row(logits[i], p, generated[i], generators[i])
            except Exception as exc:  # any failure here is this row's alone
                errors[i] = f"sampling failed: {type(exc).__name__}: {exc}"
    infos: list[dict | None] = [None] * n
    for i, p in enumerate(params):
        if p.logprobs is not None and errors[i] is None:
            try:
                infos[i] = _logprob_info(logits[i], chosen[i], p.logprobs)
            except Exception as exc:  # this row's alone too
                errors[i] = f"logprobs failed: {type(exc).__name__}: {exc}"
    return chosen, infos, errors
