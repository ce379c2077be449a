"""KServe / Open Inference Protocol v2 handlers, with the binary tensor data extension.

A request is JSON, or (``Inference-Header-Content-Length: N``) N bytes of JSON followed by the raw
bytes of the inputs whose ``parameters.binary_data_size`` say so, in input order. A BYTES tensor's
raw form is, per element, a 4-byte little-endian length and that many bytes. Every length read from
the wire is checked against what is left of the body before it is used.
"""

from __future__ import annotations

import asyncio
import struct

from tuneforge import __version__

from .body import loads_object
from .engine.base import BadRequest
from .params import sampling_params, stop_list
from .state import ServingState, collect

SERVER_NAME = "tuneforge"
OUTPUT_NAME = "text_output"
MAX_PROMPTS = 64
OPTION_KEYS = (
    "max_tokens",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "ignore_eos",
)


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
def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON part and the binary tail of a request."""
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
    return loads_object(raw, "the request's JSON"), tail


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


def _numel(shape, name: str) -> int:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers.", name)
    if 0 in shape:
        return 0
    total = 1
    for d in shape:  # stop at the bound: the product of thousands of 100-digit dims takes minutes
        total *= d
        if total > MAX_PROMPTS:
            raise BadRequest(f"input {name!r}: at most {MAX_PROMPTS} elements per request.", name)
    return total


def _flatten(data) -> list:
    if isinstance(data, list):
        out = []
        for x in data:
            out += _flatten(x) if isinstance(x, list) else [x]
        return out
    return [data]


def read_inputs(request: dict, tail: bytes) -> dict[str, tuple[str, list, list]]:
    """{name: (datatype, shape, flat values)} with binary parts cut from ``tail`` in input order."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs must be a non-empty list of tensors.", "inputs")
    out, at = {}, 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a string 'name'.", "inputs")
        name, datatype, shape = t["name"], t.get("datatype"), t.get("shape")
        if not isinstance(datatype, str):
            raise BadRequest(f"input {name!r}: datatype is missing.", name)
        numel = _numel(shape, name)
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or at + size > len(tail):
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
            if "data" not in t:
                raise BadRequest(f"input {name!r} has neither data nor binary_data_size.", name)
            values = _flatten(t["data"])
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


def options(request: dict, inputs: dict) -> tuple[dict, bool]:
    """Generation options from ``parameters`` and from scalar inputs named after an option."""
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("parameters must be an object.", "parameters")
    opts = {k: params[k] for k in OPTION_KEYS if k in params}
    for k in OPTION_KEYS:
        if k in inputs:
            dt, _, values = inputs[k]
            if len(values) != 1:
                raise BadRequest(f"input {k!r} must hold one value.", k)
            v = values[0]
            opts[k] = _text(v, k) if dt == "BYTES" else v
    if "max_new_tokens" in opts and "max_tokens" not in opts:
        opts["max_tokens"] = opts.pop("max_new_tokens")
    opts.pop("max_new_tokens", None)
    if "stop" in opts:
        opts["stop"] = stop_list(opts["stop"])
    raw = params.get("raw", False)
    if not isinstance(raw, bool):
        raise BadRequest("parameters.raw must be true or false.", "raw")
    return opts, raw


def wants_binary_output(request: dict) -> bool:
    params = request.get("parameters") or {}
    if isinstance(params, dict) and params.get("binary_data_output"):
        return True
    for o in request.get("outputs") or []:
        if (
            isinstance(o, dict)
            and isinstance(o.get("parameters"), dict)
            and o["parameters"].get("binary_data")
        ):
            return True
    return False


async def infer(state: ServingState, name: str, body: bytes, header_length: str | None):
    """Returns (response JSON, binary tail or None)."""
    variant = state.variant(name)
    request, tail = split_body(body, header_length)
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
    streams = []
    try:
        for ids, p in zip(prompts, params, strict=True):
            streams.append(state.submit(variant, ids, p))
        results = await asyncio.gather(*(collect(s) for s in streams))
    finally:
        state.cancel(streams)
    texts = [r[0] for r in results]
    output = {"name": OUTPUT_NAME, "datatype": "BYTES", "shape": shape}
    response = {"model_name": variant.id, "model_version": "1", "outputs": [output]}
    if "id" in request:
        response["id"] = request["id"]
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
