"""What every engine takes and gives: sampling options, a request, its stream of deltas, and the errors
the protocol layers turn into HTTP statuses. No torch here: handlers and the CLI import it freely."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Protocol

from tuneforge.errors import ConfigError, NotFoundError, ResourceError, TuneforgeError


class BadRequest(ConfigError):
    """A request that cannot be served as written (HTTP 400); ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class UnknownModel(NotFoundError):
    """The request names a model this worker does not serve (HTTP 404)."""

    def __init__(self, name: str, served: list[str]):
        super().__init__(f"model {name!r} is not served here; served models: {', '.join(served)}.")
        self.param = "model"


class QueueFull(ResourceError):
    """Every batch slot is busy and the waiting queue is at its bound (HTTP 503; retry later)."""


class GenerationFailed(TuneforgeError):
    """The engine could not finish this request (HTTP 500); other requests keep being served."""


# vLLM's thresholds (``_SAMPLING_EPS``, ``_MAX_TEMP`` in vllm/sampling_params.py): a temperature below
# GREEDY_BELOW is greedy, and one between it and MIN_TEMPERATURE is raised to MIN_TEMPERATURE, because
# logits divided by a near-zero temperature overflow to inf and the probabilities become nan.
GREEDY_BELOW = 1e-5
MIN_TEMPERATURE = 1e-2


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: plus the k most likely

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW or self.top_k == 1


@dataclass
class Delta:
    """What one decode step produced for one request; the last one carries ``finish_reason``."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)  # [{"token", "logprob", "top": [(tok, lp)…]}]
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


_ids = itertools.count(1)


class RequestStream:
    """The async side of one request: the engine thread pushes deltas, the handler iterates them."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.id = next(_ids)
        self.loop = loop
        self.queue: asyncio.Queue[Delta] = asyncio.Queue()
        self.cancelled = False
        self.finished = False

    def push(self, delta: Delta) -> None:
        """Thread-safe: called from the engine thread."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, delta)
        except RuntimeError:  # the reader's event loop is gone: nobody will read this request
            self.cancelled = True

    def __aiter__(self):
        return self

    async def __anext__(self) -> Delta:
        if self.finished:
            raise StopAsyncIteration
        delta = await self.queue.get()
        if delta.finish_reason is not None:
            self.finished = True
        return delta


@dataclass
class EngineStats:
    running: int = 0
    waiting: int = 0
    kv_used_tokens: int = 0
    kv_capacity_tokens: int = 1


class Engine(Protocol):
    """The engine contract the handlers rely on."""

    max_model_len: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, variant: str, prompt_ids: list[int], params: SamplingParams) -> RequestStream: ...

    def cancel(self, stream: RequestStream) -> None: ...

    def stats(self) -> EngineStats: ...

    @property
    def ready(self) -> bool: ...
