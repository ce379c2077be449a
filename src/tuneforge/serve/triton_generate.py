"""Triton's generate extension: POST /v2/models/{name}/generate and /generate_stream.

Options come from ``parameters`` (an object) and/or ``sampling_parameters`` — a JSON *string*, as
vLLM's Triton backend takes them; the seed body of the issue sends exactly that.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from .body import BodyError, loads
from .kserve import V2Parameters, v2_sampling
from .params import refused, sampling_params
from .state import ServingState


def _text(value):
    if not isinstance(value, str):
        raise refused("{field} must be a string.")
    return value


def _json_object(value):
    """sampling_parameters: an object, or a string holding one (JSON inside JSON: the body's depth and
    digit bounds apply to it too)."""
    if isinstance(value, str):
        try:
            value = loads(value.encode("utf-8", "surrogatepass"), "sampling_parameters")
        except BodyError as exc:
            raise refused(str(exc)) from None
    if value is not None and not isinstance(value, dict):
        raise refused("sampling_parameters must be a JSON object (or a string holding one).")
    return value


class GenerateRequest(V2Parameters):
    """POST /v2/models/{name}/generate[_stream]: the options may also come at the top level."""

    text_input: Annotated[str, BeforeValidator(_text)] = Field(description="The prompt.")
    parameters: V2Parameters | None = None
    sampling_parameters: Annotated[V2Parameters | None, BeforeValidator(_json_object)] = Field(
        None, description="Options as an object or as a JSON string (vLLM's Triton backend)."
    )

    def sampling(self):
        """The options of ``parameters``, then ``sampling_parameters``, then the top level: a later one
        wins."""
        sources = [p.options() for p in (self.parameters, self.sampling_parameters) if p is not None]
        return v2_sampling(*sources, self.options())

    @property
    def raw_text(self) -> bool:
        """``raw`` of ``parameters``, else of the top level."""
        if self.parameters is not None and "raw" in self.parameters.model_fields_set:
            return self.parameters.raw
        return self.raw


async def _prepare(state: ServingState, name: str, request: GenerateRequest):
    variant = state.variant(name)
    [ids] = await state.text_ids(variant, [request.text_input], raw=request.raw_text, param="text_input")
    params = sampling_params(request.sampling(), state.max_model_len, len(ids), state.default_max_tokens)
    return variant, ids, params


async def generate(state: ServingState, name: str, request: GenerateRequest) -> dict:
    variant, ids, params = await _prepare(state, name, request)
    [(text, last, _)] = await state.collect_all([state.submit(variant, ids, params)])
    return {
        "model_name": variant.id,
        "model_version": "1",
        "text_output": text,
        "finish_reason": last.finish_reason,
        "prompt_tokens": len(ids),
        "completion_tokens": last.completion_tokens,
    }


async def generate_stream(state: ServingState, name: str, request: GenerateRequest):
    """Validates now (so errors are a plain 400), then returns the stream of ``data: {json}`` events."""
    variant, ids, params = await _prepare(state, name, request)
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
