"""A slot KV cache for continuous batching with transformers models.

Each running request owns one row ("slot") of per-layer key/value buffers. Rows are kept compact
(running requests are rows ``0..n-1``): a finished request's row is overwritten by the last one, so
a decode step reads one contiguous slice and never gathers. Columns are token positions in the
row; a row's prompt is written left-padded into columns ``0..P-1`` when it is admitted (after the
columns of a prefix copied from the prefix cache, when it has one), and each decode step writes one
column per row at that row's own end. ``valid`` marks the columns holding
real tokens, which becomes the attention mask, so rows of different lengths share one forward.

Why not ``DynamicCache``: it concatenates the whole cache on every step (a full copy per layer per
token) and cannot take in or drop a request without rebuilding every tensor. Why not transformers'
paged cache: measured slower on CPU (see bench/serve_throughput.py and the serving notes).
"""

from __future__ import annotations

import torch


class SlotKVCache:
    """Duck-types the part of ``transformers.Cache`` that attention layers call: ``update``."""

    def __init__(self, num_layers: int, max_slots: int, max_len: int, dtype, device, initial_len: int = 256):
        self.num_layers = num_layers
        self.max_slots = max_slots
        self.max_len = max_len
        self.dtype, self.device = dtype, device
        self.capacity = min(initial_len, max_len)
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.valid = torch.zeros(max_slots, self.capacity, dtype=torch.bool, device=device)
        self.ends = [0] * max_slots  # next column to write, per row
        self._mode: tuple | None = None  # set by prepare_prefill / prepare_decode

    # -- what the model calls -------------------------------------------------------------------
    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        if self.keys[layer_idx] is None:
            self._allocate(layer_idx, key_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        kind, rows, cols, read_len = self._mode
        if kind == "prefill":  # rows a..b, same columns for each (a decode step whose rows end alike too)
            keys[rows, :, cols] = key_states
            values[rows, :, cols] = value_states
            return keys[rows, :, :read_len], values[rows, :, :read_len]
        # one new column per row, each at its own end
        keys[rows, :, cols] = key_states[:, :, 0]
        values[rows, :, cols] = value_states[:, :, 0]
        return keys[: len(cols), :, :read_len], values[: len(cols), :, :read_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._mode[3] if self._mode else 0

    # -- what the scheduler calls ---------------------------------------------------------------
    def _allocate(self, layer_idx: int, like: torch.Tensor) -> None:
        shape = (self.max_slots, like.shape[1], self.capacity, like.shape[3])
        self.keys[layer_idx] = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.values[layer_idx] = torch.zeros(shape, dtype=like.dtype, device=like.device)

    def ensure_capacity(self, columns: int) -> None:
        """Grow every buffer (doubling) so ``columns`` fit; KV memory follows what is used."""
        if columns <= self.capacity:
            return
        new = self.capacity
        while new < columns:
            new *= 2
        new = min(new, self.max_len)
        if columns > new:
            raise ValueError(f"{columns} columns exceed the KV cache's {self.max_len}")
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                if t is not None:
                    grown = torch.zeros(*t.shape[:2], new, t.shape[3], dtype=t.dtype, device=t.device)
                    grown[:, :, : self.capacity] = t
                    store[i] = grown
        valid = torch.zeros(self.max_slots, new, dtype=torch.bool, device=self.device)
        valid[:, : self.capacity] = self.valid
        self.valid, self.capacity = valid, new

    def prepare_prefill(
        self, first_row: int, lengths: list[int], cached: list[int] | None = None
    ) -> torch.Tensor:
        """Rows ``first_row..`` take prompt tokens of ``lengths`` after ``cached`` tokens already in their
        first columns (a prefix from the prefix cache, earlier chunks; default none); returns the 4D mask.

        The forward's columns are ``C..C+W-1`` (C = max(cached), W = max(lengths)); each row's new tokens
        are right-aligned there (left padding), so a row with a shorter prefix has a gap of invalid
        columns between its prefix and its tokens: ``valid`` masks it, position ids carry the positions.
        """
        cached = cached or [0] * len(lengths)
        start, width = max(cached), max(lengths)
        end = start + width
        self.ensure_capacity(end)
        rows = slice(first_row, first_row + len(lengths))
        self.valid[rows] = False
        for i, (n, c) in enumerate(zip(lengths, cached, strict=True)):
            self.valid[first_row + i, :c] = True
            self.valid[first_row + i, end - n : end] = True
            self.ends[first_row + i] = end
        self._mode = ("prefill", rows, slice(start, end), end)
        queries = torch.arange(start, end, device=self.device)[:, None]
        keys = torch.arange(end, device=self.device)[None]
        allowed = (keys <= queries)[None] & self.valid[rows, None, :end]
        # A padding query row would see no key at all (NaN in softmax): let it see itself.
        allowed |= (keys == queries)[None]
        return self._additive(allowed[:, None])

    def prepare_chunk(self, row: int, start: int, end: int) -> torch.Tensor:
        """Row ``row`` takes prompt tokens ``start..end-1`` into those columns, after its earlier chunks
        (chunked prefill: no padding, one row); returns the 4D mask, causal across all chunks so far."""
        return self.prepare_prefill(row, [end - start], [start])

    def write_prefix(
        self, row: int, keys: list[torch.Tensor], values: list[torch.Tensor], length: int
    ) -> None:
        """Copy a cached prefix's first ``length`` K/V columns into columns ``0..length-1`` of ``row``
        (call after ``prepare_prefill``/``prepare_chunk``, which sized the buffers and marked them valid)."""
        for store, source in ((self.keys, keys), (self.values, values)):
            for t, s in zip(store, source, strict=True):
                t[row, :, :length] = s[:, :length]

    def read_prefix(self, row: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The K/V of the first ``length`` tokens of ``row`` (its valid columns in order: a row may have a
        gap after a cached prefix), as new tensors [kv_heads, length, head_dim] per layer."""
        cols = self.valid[row].nonzero().squeeze(1)[:length]
        return [t[row][:, cols].clone() for t in self.keys], [t[row][:, cols].clone() for t in self.values]

    def prepare_decode(self, n_rows: int) -> torch.Tensor:
        """Rows ``0..n_rows-1`` each append one token at their own end; returns the 4D mask."""
        ends = self.ends[:n_rows]
        read_len = max(ends) + 1
        self.ensure_capacity(read_len)
        if min(ends) == read_len - 1:
            # Every row ends at the same column (one request; prompts admitted together): slices, which
            # write the new column at half the cost of indexing it per row (2 x 30 layers a step).
            rows, cols = slice(0, n_rows), slice(read_len - 1, read_len)
            self._mode = ("prefill", rows, cols, read_len)
        else:
            cols = torch.tensor(ends, device=self.device)
            rows = torch.arange(n_rows, device=self.device)
            self._mode = ("decode", rows, cols, read_len)
        self.valid[rows, cols] = True
        for i in range(n_rows):
            self.ends[i] += 1
        return self._additive(self.valid[:n_rows, None, None, :read_len])

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        """0 where attention is allowed, the dtype's lowest value elsewhere (added to the scores)."""
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` into ``dst`` (compaction when the request in ``dst`` has left)."""
        width = self.ends[src]
        for store in (self.keys, self.values):
            for t in store:
                if t is not None:
                    t[dst, :, :width] = t[src, :, :width]
        self.valid[dst] = False
        self.valid[dst, :width] = self.valid[src, :width]
        self.ends[dst] = width

    def release_row(self, row: int) -> None:
        self.valid[row] = False
        self.ends[row] = 0

    def used_tokens(self, n_rows: int) -> int:
        return int(self.valid[:n_rows].sum())
