"""Continual pretraining on raw text: the SFT recipe with loss on every token.

Documents are split into max_len chunks (train/data.py) and packed without padding; what differs
from SFT is only the data, so the loop is the same one.
"""

from __future__ import annotations

from . import sft


def run(spec, folder, runtime, train_records, val_records, stop, resume=None, callbacks=(), show_bar=False):
    return sft.run(spec, folder, runtime, train_records, val_records, stop, resume, callbacks, show_bar)
