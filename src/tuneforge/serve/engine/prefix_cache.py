"""Keys and values of common prompt prefixes (a shared system prompt), kept so a new request copies them
into its row of the slot cache and prefills only the rest of its prompt.

Every conversation of SmolLM2's chat template without a system message starts with the same ~30 tokens
(its default system prompt and the user turn's header), and real deployments share a system prompt: on
the bench's load that is three quarters of each prompt, and prefill on a CPU is compute-bound (a token of
prefill costs about what a decode step costs one row), so it is most of a burst's time to first token.

What is kept: a prefix is learnt when a prefilled prompt shares at least ``MIN_TOKENS`` leading tokens
with one of the last ``RECENT`` prompts of the same variant; its K/V (read from the row just prefilled)
become an entry. Because attention is causal, the K/V of a prefix's first m tokens depend on those m
tokens only, so any prompt sharing m ≥ ``MIN_TOKENS`` leading tokens with an entry reuses its first m
columns, at the same positions 0..m-1 (RoPE was applied with them). The prompt's last token is always
prefilled (its logits choose the first answer token).

Per variant: an adapter's LoRA weights change K and V, so entries are keyed by the served variant id
(base or adapter) and never shared between them; the engine serves one model for its life, and
``drop(variant)`` forgets one. Bounded: at most ``max_tokens`` prefix tokens over all entries (least
recently used leave first), each entry at most ``max_tokens // 2``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch

MIN_TOKENS = 8  # a shorter common prefix saves less than its copy and bookkeeping cost
RECENT = 8  # prompts remembered per variant (token ids only) to notice a shared prefix


@dataclass
class PrefixEntry:
    variant: str
    tokens: tuple[int, ...]
    keys: list[torch.Tensor]  # per layer: [kv_heads, len(tokens), head_dim]
    values: list[torch.Tensor]


def common_length(a, b) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class PrefixCache:
    max_tokens: int = 1024
    entries: list[PrefixEntry] = field(default_factory=list)  # least recently used first
    recent: dict[str, collections.deque] = field(default_factory=dict)
    hits: int = 0  # requests that reused a prefix
    hit_tokens: int = 0  # prompt tokens they did not prefill

    @property
    def enabled(self) -> bool:
        return self.max_tokens >= MIN_TOKENS

    def lookup(self, variant: str, prompt: list[int]) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest prefix with ``prompt`` and that length (< len(prompt)), or
        (None, 0) below ``MIN_TOKENS``. Does not count a hit: ``use`` does, when the prefix is copied."""
        best, length = None, 0
        if not self.enabled:
            return best, length
        for entry in self.entries:
            if entry.variant == variant:
                n = min(common_length(entry.tokens, prompt), len(prompt) - 1)
                if n > length:
                    best, length = entry, n
        return (best, length) if length >= MIN_TOKENS else (None, 0)

    def use(self, entry: PrefixEntry, length: int) -> None:
        self.hits += 1
        self.hit_tokens += length
        if entry in self.entries:  # most recently used last
            self.entries.remove(entry)
            self.entries.append(entry)

    def worth_learning(self, variant: str, prompt: list[int], cached: int) -> int:
        """How many leading tokens of ``prompt`` (just prefilled, ``cached`` of them from an entry) to keep
        as a new entry: its common prefix with a recent prompt of ``variant``, when longer than what is
        cached and at least ``MIN_TOKENS``; else 0. Remembers ``prompt`` either way."""
        if not self.enabled:
            return 0
        recent = self.recent.setdefault(variant, collections.deque(maxlen=RECENT))
        longest = max((common_length(r, prompt) for r in recent), default=0)
        recent.append(tuple(prompt[: self.max_tokens // 2]))
        length = min(longest, len(prompt) - 1, self.max_tokens // 2)
        return length if length >= MIN_TOKENS and length > cached else 0

    def store(self, variant: str, tokens: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]):
        """Keep a prefix's K/V; entries it extends are dropped, then the least recently used ones until
        the bound holds."""
        new = PrefixEntry(variant, tuple(tokens), keys, values)
        self.entries = [
            e for e in self.entries if not (e.variant == variant and new.tokens[: len(e.tokens)] == e.tokens)
        ]
        self.entries.append(new)
        while sum(len(e.tokens) for e in self.entries) > self.max_tokens:
            self.entries.pop(0)

    def drop(self, variant: str | None = None) -> None:
        """Forget the entries of ``variant`` (all when None): its weights changed."""
        self.entries = [e for e in self.entries if variant is not None and e.variant != variant]
        if variant is None:
            self.recent.clear()
        else:
            self.recent.pop(variant, None)
