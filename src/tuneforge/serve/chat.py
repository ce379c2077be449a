"""Chat targets for ``tuneforge chat``: a serving URL (any OpenAI-compatible endpoint, streamed over
SSE) or a local model run in this process by the same engine ``tuneforge serve`` uses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from tuneforge.errors import ConfigError, TuneforgeError


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


class RemoteChat:
    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 300):
        self.base = url.rstrip("/")
        if self.base.endswith("/v1"):
            self.base = self.base[:-3]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base, headers=headers, timeout=timeout)
        self.model = model
        self.label = model or self.base

    async def open(self) -> None:
        if self.model is None:
            r = await self.client.get("/v1/models")
            _raise_for(r, self.base)
            models = r.json().get("data") or []
            if not models:
                raise ConfigError(f"{self.base} serves no model.")
            self.model = models[0]["id"]
        self.label = f"{self.model} @ {self.base}"

    async def stream(self, messages: list[dict], options: dict) -> AsyncIterator[str]:
        body = {"model": self.model, "messages": messages, "stream": True, **options}
        async with self.client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                _raise_for(r, self.base)
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise TuneforgeError(chunk["error"].get("message", str(chunk["error"])))
                for choice in chunk.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text

    async def close(self) -> None:
        await self.client.aclose()


def _raise_for(r: httpx.Response, base: str) -> None:
    if r.status_code == 200:
        return
    try:
        message = r.json().get("error", {})
        message = message.get("message") if isinstance(message, dict) else message
    except ValueError:
        message = r.text[:200]
    raise TuneforgeError(f"{base}: HTTP {r.status_code}: {message}")


class LocalChat:
    """A model loaded here, answered by the transformers engine (no HTTP in between)."""

    def __init__(self, model: str, max_model_len: int = 2048):
        self.model_ref, self.max_model_len = model, max_model_len
        self.state = None
        self.label = model

    async def open(self) -> None:
        import asyncio

        from .worker import WorkerConfig, build_state

        config = WorkerConfig(
            self.model_ref, engine="transformers", max_batch_size=4, max_model_len=self.max_model_len
        )
        self.state = await asyncio.to_thread(build_state, config)
        self.state.engine.start()
        self.label = (
            self.state.served.base_id
            if not self.state.served.has_adapters
            else next(v.id for v in self.state.served.variants.values() if v.adapter)
        )

    async def stream(self, messages: list[dict], options: dict) -> AsyncIterator[str]:
        from .openai_protocol import ChatCompletionRequest
        from .params import sampling_params

        request = ChatCompletionRequest.parse({"model": self.label, "messages": messages, **options})
        variant = self.state.variant(request.model)
        ids = await self.state.chat_ids(variant, request.messages)
        params = sampling_params(request, self.state.max_model_len, len(ids), self.state.default_max_tokens)
        stream = self.state.submit(variant, ids, params)
        try:
            async for d in stream:
                if d.error:
                    raise TuneforgeError(d.error)
                if d.text:
                    yield d.text
        finally:
            self.state.cancel([stream])

    async def close(self) -> None:
        if self.state is not None:
            self.state.engine.stop()


def open_target(target: str, model: str | None, api_key: str | None):
    return RemoteChat(target, model, api_key) if is_url(target) else LocalChat(target)
