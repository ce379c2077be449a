"""The ``transformers`` engine: any HF causal LM (CPU or GPU) with continuous batching.

One thread owns the model. Between two decode steps it drops cancelled requests and prefills at most a
budget of prompt tokens (prefill_budget.py: ``max_prefill_tokens`` and more when few streams decode or
many requests wait): whole waiting prompts that fit (prefilled together, left-padded, straight into free
rows of the slot cache), or the next chunk of one prompt too long for that budget (chunked prefill: a
2,000-token prompt arriving stalls the running streams for a budget's worth of prefill per step, not for
its whole prompt). A prompt that starts like an earlier one (a shared system prompt) gets that prefix's
K/V copied into its row and prefills only the rest (prefix_cache.py). Then it runs one decode step for
every running request at once. A short request therefore never waits for a long one, and a client that
leaves frees its row before the next step. Requests for different LoRA adapters share the base weights
and one batch through peft's ``adapter_names``.

Long because: the scheduler (admission, chunked prefill, decode, finishing) is one loop over shared
rows of the slot cache; split, its invariants (running rows 0..n-1, the chunked prompt's row at n)
would be spread over modules.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import torch

from tuneforge.errors import ConfigError
from tuneforge.models.inference import ServedModel, ServedVariant

from . import attention, int8_linear, packed_linear
from .base import BadRequest, Delta, EngineStats, QueueFull, RequestStream, SamplingParams
from .detokenize import IncrementalText
from .kv_cache import SlotKVCache
from .prefill_budget import PrefillBudget, padding_groups
from .prefix_cache import PrefixCache, PrefixEntry
from .sampling import choose_tokens
from .threads import ThreadTuner

# The engine thread beats once per loop turn (every 0.5 s when idle, every step when busy) and once per
# decoder layer inside a forward, so a long prefill of a big model on a slow CPU (2048 tokens of a 7B
# model: minutes) still beats every few seconds. Silent this long, it is stuck (a deadlock, a hung
# kernel) and the worker answers not-ready, so the supervisor replaces it.
STALL_S = 120.0

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    max_batch_size: int = 32
    max_model_len: int = 2048
    max_queue: int = 256
    # Prompt tokens prefilled between two decode steps (padding included) whatever the timings say: the
    # base of the budget policy (prefill_budget.py); a longer prompt is prefilled in chunks of the budget.
    max_prefill_tokens: int = 128
    prefix_cache_tokens: int = 1024  # K/V of shared prompt prefixes kept, in tokens (0: off; prefix_cache.py)
    threads: int | None = None
    pack_weights: bool = True  # oneDNN-packed fp32 linear layers on CPU (packed_linear.py)
    quantize: str = "none"  # "int8": int8 linear layers on CPU instead of packed fp32 (int8_linear.py)


class NoMetrics:
    def observe_first_token(self, variant: str, seconds: float) -> None: ...
    def observe_inter_token(self, variant: str, seconds: float) -> None: ...
    def observe_finished(self, variant: str, prompt: int, completion: int, reason: str) -> None: ...
    def set_load(self, stats: EngineStats) -> None: ...
    def set_step_setting(self, bucket: int, threads: int, packed: bool) -> None: ...
    def observe_prefix_hit(self, variant: str, tokens: int) -> None: ...


@dataclass
class _Seq:
    stream: RequestStream
    variant: ServedVariant
    prompt_ids: list[int]
    params: SamplingParams
    detok: IncrementalText
    generator: torch.Generator | None
    stop_ids: set[int]
    arrived: float = field(default_factory=time.perf_counter)
    generated: list[int] = field(default_factory=list)
    pos: int = 0  # position id of the next token
    prefilled: int = 0  # prompt tokens in the cache so far (chunked prefill)
    cached: int = 0  # leading prompt tokens whose K/V come from the prefix cache
    prefix: PrefixEntry | None = None  # their entry, until copied into the row
    last_token_at: float = 0.0


def _cache_kwarg(model) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache``; speak whichever the model takes."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


class TransformersEngine:
    name = "transformers"

    def __init__(self, served: ServedModel, config: EngineConfig | None = None, metrics=None):
        self.served = served
        self.model = served.model
        self.config = config or EngineConfig()
        self.metrics = metrics or NoMetrics()
        model_cfg = self.model.config
        limit = getattr(model_cfg, "max_position_embeddings", None) or self.config.max_model_len
        self.max_model_len = min(self.config.max_model_len, limit)
        param = next(self.model.parameters())
        self.device = param.device
        self.cache = SlotKVCache(
            model_cfg.num_hidden_layers,
            self.config.max_batch_size,
            self.max_model_len,
            param.dtype,
            self.device,
        )
        self._cache_kwarg = _cache_kwarg(self.model)
        if not attention.install(self.model):
            raise ConfigError(
                f"{type(self.model).__name__} does not take a pluggable attention function; the "
                "transformers engine serves models that do (Llama, Qwen2, Mistral, Gemma, GPT-2, …)."
            )
        self.packed_layers = self.int8_layers = 0
        self.layout = packed_linear.LayoutSwitch()
        if self.config.quantize == "int8":  # replaces the fp32 linears: nothing left to pack
            self.int8_layers = int8_linear.quantize_linears(self.model, self.device)
        elif self.config.pack_weights and self.device.type == "cpu":
            rows_hint = self.config.max_batch_size
            self.packed_layers = packed_linear.pack_linears(self.model, rows_hint, self.layout)
            log.info("packed %d linear layers for oneDNN", self.packed_layers)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._running: list[_Seq] = []  # index == cache row
        self._chunked: _Seq | None = None  # a prompt being prefilled in chunks; its row: len(_running)
        self._chunked_row = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()  # the engine thread's last loop turn or decoder layer
        self._beat_in_layers(model_cfg.num_hidden_layers)
        self.peak_running = 0  # the largest batch decoded so far (tests and logs)
        self.budget = PrefillBudget(self.config.max_prefill_tokens)
        self.prefix_cache = PrefixCache(self.config.prefix_cache_tokens)
        self.tuner: ThreadTuner | None = None

    def _beat_in_layers(self, num_layers: int) -> None:
        """A pre-hook on each decoder layer (the ModuleList of ``num_hidden_layers`` blocks)."""

        def beat(*_):
            self._beat = time.monotonic()

        for module in self.model.modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
                for layer in module:
                    layer.register_forward_pre_hook(beat)
                return

    # -- the async side ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """The engine thread runs and is not stuck (``/v2/health/ready`` answers this)."""
        alive = self._thread is not None and self._thread.is_alive()
        return alive and time.monotonic() - self._beat < STALL_S

    def start(self) -> None:
        if self._thread is None:
            self._beat = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="tuneforge-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, variant: str, prompt_ids: list[int], params: SamplingParams) -> RequestStream:
        v = self.served.variants[variant]
        if not prompt_ids:
            raise BadRequest("the prompt is empty.", "prompt")
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise BadRequest(
                f"this model's maximum context length is {self.max_model_len} tokens; the prompt has "
                f"{len(prompt_ids)} and max_tokens asks for {params.max_tokens} more. Shorten the prompt "
                "or lower max_tokens.",
                "max_tokens",
            )
        stream = RequestStream(asyncio.get_running_loop())
        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=self.device).manual_seed(int(params.seed))
        stops = set() if params.ignore_eos else set(v.stop_ids)
        seq = _Seq(
            stream,
            v,
            list(prompt_ids),
            params,
            IncrementalText(v.tokenizer, params.stop),
            generator,
            stops | set(params.stop_token_ids),
        )
        with self._lock:
            # free rows count as room too: a request waits in the queue until the next step admits it
            free = max(0, self.config.max_batch_size - len(self._running))
            if len(self._waiting) >= self.config.max_queue + free:
                raise QueueFull(
                    f"the server is at capacity ({len(self._running)} running, {len(self._waiting)} "
                    "waiting); retry shortly."
                )
            self._waiting.append(seq)
        self._wake.set()
        return stream

    def cancel(self, stream: RequestStream) -> None:
        if not stream.finished:
            stream.cancelled = True
            self._wake.set()

    def stats(self) -> EngineStats:
        n = len(self._running)
        return EngineStats(
            running=n + (self._chunked is not None),
            waiting=len(self._waiting),
            kv_used_tokens=sum(len(s.prompt_ids) + len(s.generated) for s in self._running),
            kv_capacity_tokens=self.config.max_batch_size * self.max_model_len,
        )

    # -- the engine thread -----------------------------------------------------------------------
    def _run(self) -> None:
        if self.device.type != "cpu":
            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            self.tuner = None
        else:
            allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            most = min(torch.get_num_threads(), allowed or 1)
            threads = [self.config.threads] if self.config.threads else [1, most]
            layouts = (True, False) if self.packed_layers else (False,)  # no packed copy: plain (or int8)
            self.tuner = ThreadTuner(threads, layouts, self.layout.set)
        with torch.inference_mode():
            while not self._stopping:
                self._beat = time.monotonic()
                try:
                    self._drop_cancelled()
                    if self._chunked is None:
                        admitted = self._admit()
                        lengths = [len(s.prompt_ids) - s.cached for s in admitted]
                        for group in padding_groups(lengths):
                            self._prefill([admitted[i] for i in group])
                    if self._chunked is not None:
                        self._prefill_chunk()
                    if self._running:
                        self._decode_step()
                    self.metrics.set_load(self.stats())
                    if not self._running and not self._waiting and self._chunked is None:
                        self._wake.wait(timeout=0.5)
                        self._wake.clear()
                except Exception as exc:  # a failed step must not take the worker down with it
                    log.exception("engine step failed")
                    self._fail_all(f"engine error: {type(exc).__name__}: {exc}")

    def _fail_all(self, message: str) -> None:
        for seq in list(self._running):
            seq.stream.push(Delta(finish_reason="abort", error=message))
        for i in range(len(self._running)):
            self.cache.release_row(i)
        self._running.clear()
        self._drop_chunked(message)

    def _drop_chunked(self, error: str | None = None) -> None:
        seq, self._chunked = self._chunked, None
        if seq is not None:
            self.cache.release_row(self._chunked_row)
            seq.stream.push(Delta(finish_reason="abort", prompt_tokens=len(seq.prompt_ids), error=error))

    def _drop_cancelled(self) -> None:
        with self._lock:
            if any(s.stream.cancelled for s in self._waiting):
                self._waiting = collections.deque(s for s in self._waiting if not s.stream.cancelled)
        for seq in [s for s in self._running if s.stream.cancelled]:
            self._finish(seq, "abort")
        if self._chunked is not None and self._chunked.stream.cancelled:
            self._drop_chunked()

    def _admit(self) -> list[_Seq]:
        """Waiting requests (FIFO) whose whole prompts fit in free rows, the prefill budget (padded) and
        the context; or, when the first waiting prompt alone exceeds the budget, it starts a chunked
        prefill (``_chunked``) and nothing is returned."""
        free = self.config.max_batch_size - len(self._running)
        chosen: list[_Seq] = []
        width = start = 0  # the forward's new tokens per row, and the columns before them (prefixes)
        with self._lock:
            budget = self.budget.tokens(len(self._running), len(self._waiting))
            while self._waiting and len(chosen) < free:
                seq = self._waiting[0]
                seq.prefix, seq.cached = self.prefix_cache.lookup(seq.variant.id, seq.prompt_ids)
                new_width = max(width, len(seq.prompt_ids) - seq.cached)
                new_start = max(start, seq.cached)
                fits_len = all(
                    new_start + new_width + s.params.max_tokens <= self.max_model_len for s in [*chosen, seq]
                )
                if not chosen and new_width > budget:
                    self._chunked, self._chunked_row = self._waiting.popleft(), len(self._running)
                    seq.prefilled = seq.cached
                    break
                if not (fits_len and new_width * (len(chosen) + 1) <= budget):
                    break
                chosen.append(self._waiting.popleft())
                width, start = new_width, new_start
        return chosen

    def _forward(self, input_ids, mask, position_ids, seqs: list[_Seq]):
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": position_ids,
            self._cache_kwarg: self.cache,
            "use_cache": True,
            "logits_to_keep": 1,
        }
        if self.served.has_adapters:
            kwargs["adapter_names"] = [s.variant.adapter or "__base__" for s in seqs]
        return self.model(**kwargs).logits[:, -1]

    def _prefill(self, seqs: list[_Seq]) -> None:
        first = len(self._running)
        cached = [s.cached for s in seqs]
        lengths = [len(s.prompt_ids) - c for s, c in zip(seqs, cached, strict=True)]
        width = max(lengths)
        pad = self.served.variants[self.served.base_id].tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        pos = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, c, n) in enumerate(zip(seqs, cached, lengths, strict=True)):
            ids[i, width - n :] = torch.tensor(s.prompt_ids[c:])
            pos[i, width - n :] = torch.arange(c, c + n)
            s.pos = c + n
        mask = self.cache.prepare_prefill(first, lengths, cached)
        for i, s in enumerate(seqs):
            self._copy_prefix(first + i, s)
        self._running.extend(seqs)
        logits = self._timed_forward(ids.to(self.device), mask, pos.to(self.device), seqs, prefill=True)
        for i, s in enumerate(seqs):
            self._learn_prefix(first + i, s)
        self._emit(seqs, logits)

    def _copy_prefix(self, row: int, seq: _Seq) -> None:
        """Its cached prefix's K/V into ``row`` (prepared for it), counted as a hit."""
        entry, seq.prefix = seq.prefix, None
        if entry is not None:
            self.cache.write_prefix(row, entry.keys, entry.values, seq.cached)
            self.prefix_cache.use(entry, seq.cached)
            self.metrics.observe_prefix_hit(seq.variant.id, seq.cached)

    def _learn_prefix(self, row: int, seq: _Seq) -> None:
        """Keep the K/V of the prefix ``seq`` (just prefilled into ``row``) shares with recent prompts."""
        length = self.prefix_cache.worth_learning(seq.variant.id, seq.prompt_ids, seq.cached)
        if length:
            keys, values = self.cache.read_prefix(row, length)
            self.prefix_cache.store(seq.variant.id, seq.prompt_ids[:length], keys, values)

    def _prefill_chunk(self) -> None:
        """The next ``max_prefill_tokens`` of the chunked prompt, into its row (right after the running
        rows: moved down when running requests finished); the last chunk makes it a running request."""
        seq, row = self._chunked, len(self._running)
        if self._chunked_row != row:
            self.cache.move_row(self._chunked_row, row)
            self.cache.release_row(self._chunked_row)
            self._chunked_row = row
        start = seq.prefilled
        budget = self.budget.tokens(len(self._running), len(self._waiting))
        end = min(len(seq.prompt_ids), start + budget)
        mask = self.cache.prepare_chunk(row, start, end)
        self._copy_prefix(row, seq)  # before the first chunk: columns 0..start-1
        ids = torch.tensor([seq.prompt_ids[start:end]], device=self.device)
        pos = torch.arange(start, end, device=self.device)[None]
        logits = self._timed_forward(ids, mask, pos, [seq], prefill=True)
        seq.prefilled = seq.pos = end
        if end == len(seq.prompt_ids):
            self._chunked = None
            self._learn_prefix(row, seq)
            self._running.append(seq)
            self._emit([seq], logits)

    def _decode_step(self) -> None:
        seqs = list(self._running)
        self.peak_running = max(self.peak_running, len(seqs))
        ids = torch.tensor([[s.generated[-1]] for s in seqs], device=self.device)
        pos = torch.tensor([[s.pos] for s in seqs], device=self.device)
        for s in seqs:
            s.pos += 1
        mask = self.cache.prepare_decode(len(seqs))
        logits = self._timed_forward(ids, mask, pos, seqs)
        self._emit(seqs, logits)

    def _timed_forward(self, input_ids, mask, position_ids, seqs: list[_Seq], prefill: bool = False):
        """A forward under the tuner's setting for its rows (threads, weight layout), timed for it and for
        the prefill budget."""
        rows = input_ids.numel()
        if self.tuner is not None:
            self.tuner.before_step(rows, prefill)
        started = time.perf_counter()
        logits = self._forward(input_ids, mask, position_ids, seqs)
        seconds = time.perf_counter() - started
        if prefill:
            self.budget.observe_prefill(rows, seconds)
        else:
            self.budget.observe_decode(seconds)
        if self.tuner is None:
            return logits
        decided = self.tuner.after_step(rows, seconds, prefill)
        if decided is not None:
            bucket = self.tuner.bucket(rows)
            kind = "prefills of %d tokens" if prefill else "decode steps of %d rows"
            log.info(kind + " run on %d threads, packed=%s", bucket, *decided)
            if not prefill:  # the metric is the decode step's setting
                self.metrics.set_step_setting(bucket, decided.threads, decided.packed)
        return logits

    def _emit(self, seqs: list[_Seq], logits: torch.Tensor) -> None:
        tokens, infos, errors = choose_tokens(
            logits, [s.params for s in seqs], [s.generated for s in seqs], [s.generator for s in seqs]
        )
        now = time.perf_counter()
        for seq, token, info, error in zip(seqs, tokens, infos, errors, strict=True):
            if error is None:
                try:
                    self._advance(seq, token, info, now)
                    continue
                except Exception as exc:  # this request's failure (detokenizing, …) ends it alone
                    log.exception("request %d failed", seq.stream.id)
                    error = f"engine error: {type(exc).__name__}: {exc}"
            else:
                log.warning("request %d failed: %s", seq.stream.id, error)
            if seq in self._running:
                self._finish(seq, "abort", error=error)

    def _advance(self, seq: _Seq, token: int, info: dict | None, now: float) -> None:
        """Append one chosen token to ``seq`` and stream it, or finish ``seq`` if it stops here."""
        if seq.generated:
            self.metrics.observe_inter_token(seq.variant.id, now - seq.last_token_at)
        else:
            self.metrics.observe_first_token(seq.variant.id, now - seq.arrived)
        seq.last_token_at = now
        seq.generated.append(token)
        reason = None
        if token in seq.stop_ids:
            text, reason = "", "stop"
        else:
            text, hit = seq.detok.add(token)
            if hit:
                reason = "stop"
            elif len(seq.generated) >= seq.params.max_tokens:
                reason = "length"
            elif self.cache.ends[self._running.index(seq)] >= self.max_model_len:
                reason = "length"
        lp = []
        if info is not None:
            tok = seq.variant.tokenizer.convert_ids_to_tokens(token)
            lp = [{"token_id": token, "token": tok, **info}]
        if reason is None:
            seq.stream.push(Delta(text=text, token_ids=[token], logprobs=lp))
        else:
            self._finish(seq, reason, text + seq.detok.finish(), [token], lp)

    def _finish(
        self, seq: _Seq, reason: str, text: str = "", ids=None, lp=None, error: str | None = None
    ) -> None:
        row = self._running.index(seq)
        last = len(self._running) - 1
        if row != last:
            self.cache.move_row(last, row)
            self._running[row] = self._running[last]
        self._running.pop()
        self.cache.release_row(last)
        stopped_by_id = reason == "stop" and seq.generated and seq.generated[-1] in seq.stop_ids
        completion = len(seq.generated) - (1 if stopped_by_id else 0)
        seq.stream.push(
            Delta(
                text=text,
                token_ids=ids or [],
                logprobs=lp or [],
                finish_reason=reason,
                prompt_tokens=len(seq.prompt_ids),
                completion_tokens=completion,
                error=error,
            )
        )
        self.metrics.observe_finished(seq.variant.id, len(seq.prompt_ids), completion, reason)
