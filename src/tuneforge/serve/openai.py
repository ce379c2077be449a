"""OpenAI-compatible handlers: /v1/models, /v1/chat/completions, /v1/completions (no HTTP here).

Each handler takes the parsed JSON body and returns either a response dict or an async iterator of
SSE ``data:`` payloads (dicts, then the literal ``[DONE]``)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

from .engine.base import BadRequest
from .params import count, sampling_params
from .state import ServingState, collect, merge

DONE = "[DONE]"
MAX_COMPLETIONS = 64  # prompts x n in one /v1/completions request


def list_models(state: ServingState) -> dict:
    created = int(state.started)
    data = []
    for v in state.served.variants.values():
        item = {"id": v.id, "object": "model", "created": created, "owned_by": "tuneforge"}
        item["root"] = v.path
        item["parent"] = v.parent
        item["max_model_len"] = state.max_model_len
        data.append(item)
    return {"object": "list", "data": data}


def _submit_all(state, variant, requests: list) -> list:
    """Submit every (prompt ids, sampling params) or none: a refusal midway cancels those already queued."""
    streams = []
    try:
        for ids, params in requests:
            streams.append(state.submit(variant, ids, params))
    except Exception:
        state.cancel(streams)
        raise
    return streams


def _nth(params, j: int):
    """Choice j of n: with a seed, seed + j, so the n choices differ yet each one repeats."""
    if j == 0 or params.seed is None:
        return params
    return dataclasses.replace(params, seed=params.seed + j)


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chat_logprobs(entries: list[dict]) -> dict | None:
    if not entries:
        return None
    out = []
    for e in entries:
        out.append(
            {
                "token": e["token"],
                "logprob": e["logprob"],
                "bytes": list(e["token"].encode("utf-8")),
                "top_logprobs": [{"token": str(t), "logprob": lp} for t, lp in e.get("top_named", [])],
            }
        )
    return {"content": out}


def _name_top(state: ServingState, entries: list[dict]) -> list[dict]:
    """Token ids of the top alternatives become token strings (the engine reports ids)."""
    tok = state.served.variants[state.served.base_id].tokenizer
    for e in entries:
        if e.get("top") and "top_named" not in e:
            e["top_named"] = [(tok.convert_ids_to_tokens(i), lp) for i, lp in e["top"]]
    return entries


def _options(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false.", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise BadRequest("stream_options must be an object.", "stream_options")
    if body.get("tools") or body.get("functions"):
        raise BadRequest("tools and function calling are not supported by this server.", "tools")
    if body.get("echo") or body.get("suffix"):
        raise BadRequest("echo and suffix are not supported by this server.", "echo")
    return stream, bool(opts.get("include_usage", False))


async def chat_completions(state: ServingState, body: dict):
    variant = state.variant(body.get("model"))
    stream, include_usage = _options(body)
    n = count(body)
    ids = await state.chat_ids(variant, body.get("messages"))
    params = sampling_params(body, state.max_model_len, len(ids), state.default_max_tokens)
    streams = _submit_all(state, variant, [(ids, _nth(params, j)) for j in range(n)])
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if stream:
        return _chat_stream(state, streams, rid, created, variant.id, include_usage)
    try:
        results = await asyncio.gather(*(collect(s) for s in streams))
    finally:
        state.cancel(streams)
    choices = []
    for i, (text, last, lps) in enumerate(results):
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": _chat_logprobs(_name_top(state, lps)) if params.logprobs is not None else None,
                "finish_reason": last.finish_reason,
            }
        )
    completion = sum(r[1].completion_tokens for r in results)
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": variant.id,
        "choices": choices,
        "usage": _usage(len(ids), completion),
    }


async def _chat_stream(state, streams, rid, created, model, include_usage) -> AsyncIterator:
    def chunk(choices, usage=None):
        out = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            out["usage"] = usage
        return out

    prompt_tokens, completion = 0, 0
    try:
        yield chunk(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                for i in range(len(streams))
            ]
        )
        async for i, d in merge(streams):
            if d.error:
                yield {"error": {"message": d.error, "type": "server_error", "param": None, "code": None}}
                return
            lp = _chat_logprobs(_name_top(state, d.logprobs)) if d.logprobs else None
            if d.text or lp or d.finish_reason:
                delta = {"content": d.text} if d.text or not d.finish_reason else {}
                yield chunk([{"index": i, "delta": delta, "logprobs": lp, "finish_reason": d.finish_reason}])
            if d.finish_reason:
                prompt_tokens = d.prompt_tokens
                completion += d.completion_tokens
        if include_usage:
            yield chunk([], _usage(prompt_tokens, completion))
        yield DONE
    finally:
        state.cancel(streams)


async def _prompts(state: ServingState, variant, prompt, n: int) -> list[list[int]]:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids; their count
    is checked before any is tokenized."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            prompt = [prompt]
        if len(prompt) * n > MAX_COMPLETIONS:
            raise BadRequest(f"at most {MAX_COMPLETIONS} completions per request (prompts x n).", "n")
        if all(isinstance(p, str) for p in prompt):
            return await state.text_ids(variant, prompt, raw=True)
        if all(isinstance(p, list) for p in prompt):
            return [state.check_token_ids(p) for p in prompt]
    raise BadRequest("prompt must be a string, a list of strings or a list of token ids.", "prompt")


def _completion_logprobs(entries: list[dict], offset0: int = 0) -> dict | None:
    if not entries:
        return None
    tokens = [e["token"] for e in entries]
    offsets, at = [], offset0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{str(t): lp for t, lp in e.get("top_named", [])} for e in entries],
        "text_offset": offsets,
    }


async def completions(state: ServingState, body: dict):
    variant = state.variant(body.get("model"))
    stream, include_usage = _options(body)
    n = count(body)
    prompts = await _prompts(state, variant, body.get("prompt"), n)
    params = [
        sampling_params(body, state.max_model_len, len(ids), state.default_max_tokens) for ids in prompts
    ]
    streams = _submit_all(
        state, variant, [(ids, _nth(p, j)) for ids, p in zip(prompts, params, strict=True) for j in range(n)]
    )
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    prompt_tokens = sum(len(ids) * n for ids in prompts)
    if stream:
        return _completion_stream(state, streams, rid, created, variant.id, include_usage, prompt_tokens)
    try:
        results = await asyncio.gather(*(collect(s) for s in streams))
    finally:
        state.cancel(streams)
    choices = [
        {
            "index": i,
            "text": text,
            "logprobs": _completion_logprobs(_name_top(state, lps))
            if params[0].logprobs is not None
            else None,
            "finish_reason": last.finish_reason,
        }
        for i, (text, last, lps) in enumerate(results)
    ]
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": variant.id,
        "choices": choices,
        "usage": _usage(prompt_tokens, sum(r[1].completion_tokens for r in results)),
    }


async def _completion_stream(state, streams, rid, created, model, include_usage, prompt_tokens):
    def chunk(choices, usage=None):
        out = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
        if include_usage:
            out["usage"] = usage
        return out

    completion = 0
    try:
        async for i, d in merge(streams):
            if d.error:
                yield {"error": {"message": d.error, "type": "server_error", "param": None, "code": None}}
                return
            lp = _completion_logprobs(_name_top(state, d.logprobs)) if d.logprobs else None
            if d.text or lp or d.finish_reason:
                yield chunk([{"index": i, "text": d.text, "logprobs": lp, "finish_reason": d.finish_reason}])
            completion += d.completion_tokens
        if include_usage:
            yield chunk([], _usage(prompt_tokens, completion))
        yield DONE
    finally:
        state.cancel(streams)


def error_body(message: str, type_: str, param: str | None = None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
