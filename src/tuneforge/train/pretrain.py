"""Continual pretraining on raw text: the SFT recipe with loss on every token.

Documents are split into max_len chunks (train/data.py, for records with "text") and packed without
padding; the spec forces ``data.mask: all``. What differs from SFT is only the data, so the loop is
the same one.
"""

from __future__ import annotations

from .sft import run

__all__ = ["run"]
