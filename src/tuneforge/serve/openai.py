"""OpenAI-compatible handlers: /v1/models, /v1/chat/completions, /v1/completions (no HTTP here).

Each handler takes its request as a type (``openai_protocol``) and returns either a response dict or
an async iterator of SSE ``data:`` payloads (dicts, then the literal ``[DONE]``)."""

from __future__ import annotations

import dataclasses
import time
import uuid

from .engine.base import BadRequest
from .openai_protocol import ChatCompletionRequest, CompletionRequest
from .params import sampling_params
from .state import ServingState, merge

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


async def chat_completions(state: ServingState, request: ChatCompletionRequest):
    variant = state.variant(request.model)
    n = request.n
    ids = await state.chat_ids(variant, request.messages)
    params = sampling_params(request, state.max_model_len, len(ids), state.default_max_tokens)
    streams = state.submit_all(variant, [(ids, _nth(params, j)) for j in range(n)])
    head = _head("chatcmpl", "chat.completion", variant.id)
    if request.stream:
        role = {"role": "assistant", "content": ""}
        opening = [{"index": i, "delta": role, "logprobs": None, "finish_reason": None} for i in range(n)]
        head["object"] = "chat.completion.chunk"
        return _stream(state, streams, head, request.include_usage, _chat_delta, len(ids), opening)
    results = await state.collect_all(streams)
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
    return {**head, "choices": choices, "usage": _usage(len(ids), completion)}


def _head(prefix: str, kind: str, model: str) -> dict:
    """The fields an answer (and each of its chunks) starts with."""
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model}


def _chat_delta(state: ServingState, i: int, d) -> dict:
    lp = _chat_logprobs(_name_top(state, d.logprobs)) if d.logprobs else None
    delta = {"content": d.text} if d.text or not d.finish_reason else {}
    return {"index": i, "delta": delta, "logprobs": lp, "finish_reason": d.finish_reason}


def _completion_delta(state: ServingState, i: int, d) -> dict:
    lp = _completion_logprobs(_name_top(state, d.logprobs)) if d.logprobs else None
    return {"index": i, "text": d.text, "logprobs": lp, "finish_reason": d.finish_reason}


async def _stream(state, streams, head: dict, include_usage: bool, choice, prompt_tokens: int, opening=None):
    """The SSE payloads of n streams: ``opening`` choices, a chunk for each delta that carries text,
    logprobs or the end, the usage when asked, ``[DONE]``; an error event if the engine failed."""

    def chunk(choices: list, usage: dict | None = None) -> dict:
        return {**head, "choices": choices, "usage": usage} if include_usage else {**head, "choices": choices}

    completion = 0
    try:
        if opening:
            yield chunk(opening)
        async for i, d in merge(streams):
            if d.error:
                yield error_body(d.error, "server_error")
                return
            if d.text or d.logprobs or d.finish_reason:
                yield chunk([choice(state, i, d)])
            completion += d.completion_tokens  # the engines report it on the last delta only
        if include_usage:
            yield chunk([], _usage(prompt_tokens, completion))
        yield DONE
    finally:
        state.cancel(streams)


async def _prompts(state: ServingState, variant, request: CompletionRequest) -> list[list[int]]:
    """The prompts' ids; their count is checked before any is tokenized."""
    prompts = request.prompts()
    if len(prompts) * request.n > MAX_COMPLETIONS:
        raise BadRequest(f"at most {MAX_COMPLETIONS} completions per request (prompts x n).", "n")
    if isinstance(prompts[0], str):
        return await state.text_ids(variant, prompts, raw=True)
    return [state.check_token_ids(p) for p in prompts]


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


async def completions(state: ServingState, request: CompletionRequest):
    variant = state.variant(request.model)
    n = request.n
    prompts = await _prompts(state, variant, request)
    params = [
        sampling_params(request, state.max_model_len, len(ids), state.default_max_tokens) for ids in prompts
    ]
    streams = state.submit_all(
        variant, [(ids, _nth(p, j)) for ids, p in zip(prompts, params, strict=True) for j in range(n)]
    )
    head = _head("cmpl", "text_completion", variant.id)
    prompt_tokens = sum(len(ids) * n for ids in prompts)
    if request.stream:
        return _stream(state, streams, head, request.include_usage, _completion_delta, prompt_tokens)
    results = await state.collect_all(streams)
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
        **head,
        "choices": choices,
        "usage": _usage(prompt_tokens, sum(r[1].completion_tokens for r in results)),
    }


def error_body(message: str, type_: str, param: str | None = None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
