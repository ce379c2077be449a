"""Batches for the trainer: padding-free packed rows, or padded batches for models that need them."""

from __future__ import annotations

import torch

from tuneforge.data.tokenize import IGNORE_INDEX


class PackedCollator:
    """Concatenate a batch's examples into one row; positions restart and attention stays inside each.

    The first label of every example is ignored: it would otherwise be predicted from the previous
    example's last token.
    """

    def __call__(self, features: list[dict]) -> dict:
        ids, labels, positions, bounds = [], [], [], [0]
        for f in features:
            n = len(f["input_ids"])
            ids += f["input_ids"]
            labels += [IGNORE_INDEX] + list(f["labels"][1:])
            positions += range(n)
            bounds.append(bounds[-1] + n)
        cu = torch.tensor(bounds, dtype=torch.int32)
        longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": longest,
            "max_length_k": longest,
        }


class PaddedCollator:
    """Right-pad to the longest example of the batch (models whose attention cannot take packed rows)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            gap = longest - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad] * gap)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * gap)
            mask.append([1] * len(f["input_ids"]) + [0] * gap)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }
