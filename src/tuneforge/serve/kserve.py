"""KServe / Open Inference Protocol v2 handlers, with the binary tensor data extension.

A request is JSON, or (``Inference-Header-Content-Length: N``) N bytes of JSON followed by the raw
bytes of the inputs whose ``parameters.binary_data_size`` say so, in input order. A BYTES tensor's
raw form is, per element, a 4-byte little-endian length and that many bytes. Every length read from
the wire is checked against what is left of the body before it is used.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any

from pydantic import Field, StrictInt, model_validator

from tuneforge import __version__

from .body import loads_object
from .engine.base import BadRequest
from .params import (
    Flag,
    GenerationOptions,
    RequestModel,
    SamplingOptions,
    Tokens,
    non_empty,
    refused,
    sampling_params,
    worded,
)
from .state import ServingState

SERVER_NAME = "tuneforge"
OUTPUT_NAME = "text_output"
MAX_PROMPTS = 64
OPTION_KEYS = (*GenerationOptions.model_fields, "max_new_tokens")  # Triton's name of max_tokens


# -- the request as types ----------------------------------------------------------------------
class V2Parameters(GenerationOptions):
    """A request's ``parameters`` (KServe, Triton): the generation options, and how to answer."""

    max_new_tokens: Tokens | None = Field(None, description="Triton's name of max_tokens.")
    raw: Flag = Field(False, description="Send the text as it is, not as one user turn of the chat template.")

    def options(self) -> dict:
        """The generation options this request set."""
        return self.model_dump(include=set(OPTION_KEYS), exclude_unset=True)


class InferParameters(V2Parameters):
    binary_data_output: bool = Field(False, description="Answer the outputs as binary tensor data.")


def v2_sampling(*sources: dict) -> SamplingOptions:
    """The options of several sources, a later one winning; max_new_tokens counts where max_tokens is
    not given."""
    merged: dict = {}
    for source in sources:
        merged.update(source)
    if "max_new_tokens" in merged:
        merged.setdefault("max_tokens", merged["max_new_tokens"])
        del merged["max_new_tokens"]
    return SamplingOptions.parse(merged)


class TensorParameters(RequestModel):
    binary_data_size: Annotated[StrictInt, Field(ge=0)] | None = Field(
        None, description="This input's bytes follow the JSON header (binary tensor data extension)."
    )
    binary_data: bool = Field(False, description="Answer this output as binary tensor data.")


def _numel(shape: list[int]) -> int | None:
    """How many elements a tensor of ``shape`` holds, or None when over MAX_PROMPTS."""
    if 0 in shape:
        return 0
    total = 1
    for d in shape:  # stop at the bound: the product of thousands of 100-digit dims takes minutes
        total *= d
        if total > MAX_PROMPTS:
            return None
    return total


class InferInput(RequestModel):
    name: str
    datatype: str = Field(description="BYTES for text.")
    shape: Annotated[
        list[Annotated[StrictInt, Field(ge=0)]], worded("{field} must be a list of non-negative integers.")
    ]
    data: Any = Field(None, description="The elements, flat or nested; or binary_data_size instead.")
    parameters: TensorParameters | None = None

    @model_validator(mode="after")
    def _few_elements(self):
        if _numel(self.shape) is None:
            raise refused(f"input {self.name!r}: at most {MAX_PROMPTS} elements per request.")
        return self


class InferOutput(RequestModel):
    name: str | None = None
    parameters: TensorParameters | None = None


class InferRequest(RequestModel):
    """POST /v2/models/{name}/infer: the prompts as a BYTES input (text_input), the options in
    ``parameters`` or as scalar inputs named after them."""

    id: str | None = Field(None, description="Echoed in the answer.")
    inputs: Annotated[list[InferInput], non_empty("inputs must be a non-empty list of tensors.")]
    outputs: list[InferOutput] | None = None
    parameters: InferParameters | None = None


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data", "generate"]}


def model_metadata(state: ServingState, name: str) -> dict:
    v = state.variant(name)
    return {
        "name": v.id,
        "versions": ["1"],
        "platform": f"tuneforge_{getattr(state.engine, 'name', 'engine')}",
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "parameters": {"parent": v.parent} if v.parent else {},
    }


# -- the wire format ---------------------------------------------------------------------------
def split_body(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The JSON part, as a type, and the binary tail of a request."""
    if header_length is None:
        raw, tail = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer.", "headers") from None
        if not 0 < n <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes.", "headers"
            )
        raw, tail = body[:n], body[n:]
    return InferRequest.parse(loads_object(raw, "the request's JSON")), tail


def decode_bytes_tensor(raw: bytes, name: str) -> list[bytes]:
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BadRequest(f"input {name!r}: binary BYTES data ends inside an element's length.", name)
        (n,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + n > len(raw):
            raise BadRequest(
                f"input {name!r}: an element claims {n} bytes; only {len(raw) - at} are left.", name
            )
        items.append(raw[at : at + n])
        at += n
    return items


def encode_bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _flatten(data) -> list:
    if isinstance(data, list):
        out = []
        for x in data:
            out += _flatten(x) if isinstance(x, list) else [x]
        return out
    return [data]


def read_inputs(request: InferRequest, tail: bytes) -> dict[str, tuple[str, list, list]]:
    """{name: (datatype, shape, flat values)} with binary parts cut from ``tail`` in input order."""
    out, at = {}, 0
    for t in request.inputs:
        name, datatype, shape = t.name, t.datatype, t.shape
        size = t.parameters.binary_data_size if t.parameters else None
        if size is not None:
            if at + size > len(tail):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size!r} exceeds the {len(tail) - at} bytes left.",
                    name,
                )
            raw = tail[at : at + size]
            at += size
            if datatype != "BYTES":
                raise BadRequest(f"input {name!r}: binary data is only read for BYTES tensors here.", name)
            values = decode_bytes_tensor(raw, name)
        else:
            if t.data is None:
                raise BadRequest(f"input {name!r} has neither data nor binary_data_size.", name)
            values = _flatten(t.data)
        numel = _numel(shape)
        if len(values) != numel:
            raise BadRequest(
                f"input {name!r}: shape {shape} holds {numel} elements; got {len(values)}.", name
            )
        out[name] = (datatype, shape, values)
    if at != len(tail):
        raise BadRequest(f"{len(tail) - at} bytes of binary data are not claimed by any input.", "inputs")
    return out


def _text(value, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: prompts must be UTF-8 text.", name) from None
    if isinstance(value, str):
        return value
    raise BadRequest(f"input {name!r}: BYTES elements must be strings; got {type(value).__name__}.", name)


def _prompt_input(inputs: dict) -> str:
    for name in ("text_input", "prompt", "text", "input"):
        if name in inputs:
            return name
    texts = [n for n, (dt, _, _) in inputs.items() if dt == "BYTES" and n not in OPTION_KEYS]
    if len(texts) != 1:
        raise BadRequest(
            "send the prompts as one BYTES input (named text_input, or the only BYTES input).", "inputs"
        )
    return texts[0]


def options(request: InferRequest, inputs: dict) -> tuple[SamplingOptions, bool]:
    """Generation options from ``parameters`` and from scalar inputs named after an option."""
    params = request.parameters or InferParameters()
    from_inputs = {}
    for k in OPTION_KEYS:
        if k in inputs:
            dt, _, values = inputs[k]
            if len(values) != 1:
                raise BadRequest(f"input {k!r} must hold one value.", k)
            v = values[0]
            from_inputs[k] = _text(v, k) if dt == "BYTES" else v
    return v2_sampling(params.options(), from_inputs), params.raw


def wants_binary_output(request: InferRequest) -> bool:
    if request.parameters and request.parameters.binary_data_output:
        return True
    return any(o.parameters and o.parameters.binary_data for o in request.outputs or [])


async def infer(state: ServingState, name: str, request: InferRequest, tail: bytes):
    """Returns (response JSON, binary tail or None)."""
    variant = state.variant(name)
    inputs = read_inputs(request, tail)
    prompt_name = _prompt_input(inputs)
    datatype, shape, values = inputs[prompt_name]
    if datatype != "BYTES":
        raise BadRequest(
            f"input {prompt_name!r} must have datatype BYTES (text); got {datatype}.", prompt_name
        )
    opts, raw = options(request, inputs)
    prompts = await state.text_ids(variant, [_text(v, prompt_name) for v in values], raw, prompt_name)
    params = [sampling_params(opts, state.max_model_len, len(p), state.default_max_tokens) for p in prompts]
    results = await state.collect_all(state.submit_all(variant, list(zip(prompts, params, strict=True))))
    texts = [r[0] for r in results]
    output = {"name": OUTPUT_NAME, "datatype": "BYTES", "shape": shape}
    response = {"model_name": variant.id, "model_version": "1", "outputs": [output]}
    if "id" in request.model_fields_set:
        response["id"] = request.id
    response["parameters"] = {
        "prompt_tokens": sum(len(p) for p in prompts),
        "completion_tokens": sum(r[1].completion_tokens for r in results),
        "finish_reasons": ",".join(str(r[1].finish_reason) for r in results),
    }
    if wants_binary_output(request):
        blob = encode_bytes_tensor([t.encode("utf-8") for t in texts])
        output["parameters"] = {"binary_data_size": len(blob)}
        return response, blob
    output["data"] = texts
    return response, None
