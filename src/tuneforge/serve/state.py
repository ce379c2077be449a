"""What the protocol handlers share: the served models, the engine, prompt rendering and limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tuneforge.models.inference import ServedModel, ServedVariant

from .engine.base import (
    BadRequest,
    Delta,
    Engine,
    GenerationFailed,
    RequestStream,
    SamplingParams,
    UnknownModel,
)
from .openai_protocol import ChatMessage

CHARS_PER_TOKEN_BOUND = 32  # a prompt longer than this many characters per context token cannot fit


@dataclass
class ServingState:
    served: ServedModel
    engine: Engine
    metrics: object = None
    default_max_tokens: int = 512
    started: float = 0.0

    def __post_init__(self):
        self.started = self.started or time.time()

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def variant(self, name) -> ServedVariant:
        if not isinstance(name, str) or name not in self.served.variants:
            raise UnknownModel(str(name), list(self.served.variants))
        return self.served.variants[name]

    # -- prompts -------------------------------------------------------------------------------
    # Rendering and tokenizing run in a worker thread (``chat_ids``/``text_ids``): about a second per MiB,
    # which on the event loop would starve the health probes until the supervisor kills the worker.
    # Before that, what cannot fit the context is refused by counting characters, which is cheap.
    @property
    def max_prompt_chars(self) -> int:
        return self.max_model_len * CHARS_PER_TOKEN_BOUND

    def _check_chars(self, n: int, param: str, what: str) -> None:
        if n > self.max_prompt_chars:
            raise BadRequest(
                f"{what} {n} characters; this model's context of {self.max_model_len} tokens holds at most "
                f"{self.max_prompt_chars} characters here. "
                + ("Shorten or drop messages." if param == "messages" else f"Shorten {param}."),
                param,
            )

    def _turns(self, messages: list[ChatMessage]) -> list[dict]:
        """The {role, content} turns the chat template renders, refused by their count or characters
        if they cannot fit the context."""
        if len(messages) > self.max_model_len:  # every message takes at least one token of the context
            raise BadRequest(
                f"messages has {len(messages)} entries; this model's context holds {self.max_model_len} "
                "tokens. Send fewer messages.",
                "messages",
            )
        turns = [{"role": m.role, "content": m.text} for m in messages]
        chars = sum(len(t["role"]) + len(t["content"]) for t in turns)
        self._check_chars(chars, "messages", "messages hold in all")
        return turns

    def _render_chat(self, variant: ServedVariant, turns: list[dict]) -> list[int]:
        """Render checked turns with the model's own saved chat template, ending with the assistant's
        turn, and tokenize them."""
        try:
            text = variant.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # the template's own checks (roles alternate, …) are the user's to fix
            raise BadRequest(f"the model's chat template refused these messages: {exc}", "messages") from None
        return self._encode(variant, text, "messages")

    def _render_text(self, variant: ServedVariant, text: str, raw: bool, param: str) -> list[int]:
        """A checked plain prompt; wrapped as one user turn when the model has a chat template, unless raw."""
        if not raw and getattr(variant.tokenizer, "chat_template", None):
            return self._render_chat(variant, [{"role": "user", "content": text}])
        return self._encode(variant, text, param)

    async def chat_ids(self, variant: ServedVariant, messages: list[ChatMessage]) -> list[int]:
        """The prompt ids of a chat: checked here (cheap, by characters, before anything is rendered),
        rendered and tokenized off the event loop."""
        turns = self._turns(messages)
        return await asyncio.to_thread(self._render_chat, variant, turns)

    async def text_ids(
        self, variant: ServedVariant, texts: list[str], raw: bool = False, param: str = "prompt"
    ) -> list[list[int]]:
        """The prompt ids of each text: checked here, rendered and tokenized off the event loop."""
        for text in texts:
            self._check_chars(len(text), param, f"{param} has")
        return await asyncio.to_thread(lambda: [self._render_text(variant, t, raw, param) for t in texts])

    def _encode(self, variant: ServedVariant, text: str, param: str) -> list[int]:
        ids = variant.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise BadRequest(f"{param} is empty.", param)
        if len(ids) >= self.max_model_len:
            raise BadRequest(
                f"{param} has {len(ids)} tokens; this model's context is {self.max_model_len}. Shorten it.",
                param,
            )
        return ids

    def check_token_ids(self, ids, param: str = "prompt") -> list[int]:
        vocab = len(self.served.variants[self.served.base_id].tokenizer)
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids):
            raise BadRequest(f"{param}: token ids must be integers in [0, {vocab}).", param)
        if len(ids) >= self.max_model_len:
            raise BadRequest(f"{param} has {len(ids)} tokens; the context is {self.max_model_len}.", param)
        return ids

    # -- running -------------------------------------------------------------------------------
    def submit(self, variant: ServedVariant, ids: list[int], params: SamplingParams) -> RequestStream:
        return self.engine.submit(variant.id, ids, params)

    def submit_all(self, variant: ServedVariant, requests: list[tuple[list[int], SamplingParams]]) -> list:
        """Submit every (prompt ids, sampling params) or none: a refusal midway (a full queue) cancels
        those already queued."""
        streams = []
        try:
            for ids, params in requests:
                streams.append(self.submit(variant, ids, params))
        except Exception:
            self.cancel(streams)
            raise
        return streams

    async def collect_all(self, streams: list[RequestStream]) -> list[tuple[str, Delta, list[dict]]]:
        """The whole answer of each stream (``collect``); all are cancelled if one fails or the
        request is cancelled (its client left)."""
        try:
            return await asyncio.gather(*(collect(s) for s in streams))
        finally:
            self.cancel(streams)

    def cancel(self, streams: list[RequestStream]) -> None:
        for s in streams:
            self.engine.cancel(s)


async def merge(streams: list[RequestStream]) -> AsyncIterator[tuple[int, Delta]]:
    """Deltas of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for d in streams[0]:
            yield 0, d
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, s: RequestStream):
        async for d in s:
            await queue.put((i, d))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        done = 0
        while done < len(streams):
            i, d = await queue.get()
            if d.finish_reason is not None:
                done += 1
            yield i, d
    finally:
        for t in tasks:
            t.cancel()


async def collect(stream: RequestStream) -> tuple[str, Delta, list[dict]]:
    """The whole answer of one stream: text, the last delta (finish reason, usage), logprobs."""
    parts, lps = [], []
    last = Delta()
    async for d in stream:
        parts.append(d.text)
        lps += d.logprobs
        last = d
    if last.error:
        raise GenerationFailed(last.error)
    return "".join(parts), last, lps
