"""Triton's generate extension: POST /v2/models/{name}/generate and /generate_stream.

Options come from ``parameters`` (an object) and/or ``sampling_parameters`` — a JSON *string*, as
vLLM's Triton backend takes them; the seed body of the issue sends exactly that.
"""

from __future__ import annotations

from .body import BodyError, loads
from .engine.base import BadRequest
from .kserve import OPTION_KEYS
from .params import sampling_params, stop_list
from .state import ServingState, collect


def _options(body: dict) -> tuple[dict, bool]:
    opts: dict = {}
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("parameters must be an object.", "parameters")
    sp = body.get("sampling_parameters")
    if sp is not None:
        if isinstance(sp, str):  # JSON inside JSON: the body's depth and digit bounds apply to it too
            try:
                sp = loads(sp.encode("utf-8", "surrogatepass"), "sampling_parameters")
            except BodyError as exc:
                raise BadRequest(str(exc), "sampling_parameters") from None
        if not isinstance(sp, dict):
            raise BadRequest(
                "sampling_parameters must be a JSON object (or a string holding one).", "sampling_parameters"
            )
    for source in (params, sp or {}, body):
        for k in OPTION_KEYS:
            if k in source:
                opts[k] = source[k]
    if "max_new_tokens" in opts:
        opts.setdefault("max_tokens", opts["max_new_tokens"])
        opts.pop("max_new_tokens")
    if "stop" in opts:
        opts["stop"] = stop_list(opts["stop"])
    raw = params.get("raw", body.get("raw", False))
    if not isinstance(raw, bool):
        raise BadRequest("raw must be true or false.", "raw")
    return opts, raw


async def _prepare(state: ServingState, name: str, body: dict):
    variant = state.variant(name)
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object.", "body")
    text = body.get("text_input")
    if text is None:
        raise BadRequest("text_input is missing.", "text_input")
    opts, raw = _options(body)
    [ids] = await state.text_ids(variant, [text], raw=raw, param="text_input")
    params = sampling_params(opts, state.max_model_len, len(ids), state.default_max_tokens)
    return variant, ids, params


async def generate(state: ServingState, name: str, body: dict) -> dict:
    variant, ids, params = await _prepare(state, name, body)
    stream = state.submit(variant, ids, params)
    try:
        text, last, _ = await collect(stream)
    finally:
        state.cancel([stream])
    return {
        "model_name": variant.id,
        "model_version": "1",
        "text_output": text,
        "finish_reason": last.finish_reason,
        "prompt_tokens": len(ids),
        "completion_tokens": last.completion_tokens,
    }


async def generate_stream(state: ServingState, name: str, body: dict):
    """Validates now (so errors are a plain 400), then returns the stream of ``data: {json}`` events."""
    variant, ids, params = await _prepare(state, name, body)
    stream = state.submit(variant, ids, params)

    async def events():
        try:
            async for d in stream:
                if d.error:
                    yield {"error": d.error}
                    return
                event = {"model_name": variant.id, "model_version": "1", "text_output": d.text}
                if d.finish_reason:
                    event["finish_reason"] = d.finish_reason
                    event["prompt_tokens"] = d.prompt_tokens
                    event["completion_tokens"] = d.completion_tokens
                if d.text or d.finish_reason:
                    yield event
        finally:
            state.cancel([stream])

    return events()
