"""Request bodies as types, and the one function that turns sampling options into the engine's
``SamplingParams``.

Every protocol's request is a ``RequestModel`` (pydantic): the OpenAI ones in ``openai_protocol``, KServe's
in ``kserve``, Triton's in ``triton_generate``. The sampling options they share are ``SamplingOptions``
here, checked by one set of validators, so every protocol refuses the same bad value with the same 400
naming the field. A ``ValidationError`` never leaves a model: ``RequestModel.parse`` turns its first
error into the ``BadRequest`` the routes answer (OpenAI: ``param`` is the field).

Unknown fields are ignored, as OpenAI's API ignores them (clients send vendor extras).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
)
from pydantic_core import PydanticCustomError, PydanticUseDefault

from .engine.base import GREEDY_BELOW, MIN_TEMPERATURE, BadRequest, SamplingParams

MAX_STOP_STRINGS = 8
MAX_STOP_TOKEN_IDS = 64
MAX_N = 16
MAX_TOP_LOGPROBS = 20

_FIELD = "{field}"  # in a refusal's message: the path of the value refused (messages[2].content)


def refused(message: str) -> PydanticCustomError:
    """A refusal in the worker's own words; ``{field}`` in ``message`` becomes the refused value's path."""
    return PydanticCustomError("refused", message)


# pydantic's own wording for the errors no validator here words itself
_PLAIN = {
    "missing": "is missing.",
    "model_type": "must be an object.",
    "model_attributes_type": "must be an object.",
    "dict_type": "must be an object.",
    "list_type": "must be a list.",
    "string_type": "must be a string.",
}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def bad_request(exc: ValidationError) -> BadRequest:
    """The first error of a request's validation as the 400 the routes answer; ``param`` is the top
    field it is in (OpenAI's ``param``)."""
    err = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    loc = tuple(err["loc"])
    path = _path(loc) or "the request body"
    if err["type"] == "refused":
        message = err["msg"].replace(_FIELD, path)
    elif err["type"] in _PLAIN:
        message = f"{path} {_PLAIN[err['type']]}"
    else:
        message = f"{path}: {err['msg']}."
    return BadRequest(message, str(loc[0]) if loc else "body")


class RequestModel(BaseModel):
    """A request body (or a part of one) as a type."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def parse(cls, body: Any) -> Self:
        """The validated request, or the ``BadRequest`` (400) naming its first problem."""
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise bad_request(exc) from None


def worded(message: str | Callable[[Any], str]) -> WrapValidator:
    """Any failure of the type it annotates answered in one sentence (``message``, or ``message(value)``)
    rather than pydantic's one error per member of a union."""

    def wrap(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise refused(message(value) if callable(message) else message) from None

    return WrapValidator(wrap)


def non_empty(message: str) -> BeforeValidator:
    """A list with at least one item, else ``message`` (checked before the items are)."""

    def check(value):
        if not isinstance(value, list) or not value:
            raise refused(message)
        return value

    return BeforeValidator(check)


Item = TypeVar("Item")
NonEmpty = Annotated[list[Item], Field(min_length=1)]


# -- field types: the checks every protocol shares, worded as before they were types ---------------
def _number(value, field: str, lo: float, hi: float, integer: bool):
    if isinstance(value, str):  # KServe/Triton parameters often arrive as strings
        try:
            value = float(value) if not integer else int(value)
        except ValueError:
            shown = value if len(value) <= 40 else f"{value[:40]}… ({len(value):,} characters)"
            raise refused(f"{field} must be a number; got {shown!r}.") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refused(f"{field} must be a number; got {type(value).__name__}.")
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise refused(f"{field} must be an integer; got {value}.")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise refused(f"{field} must be between {lo} and {hi}; got {value}.")
    return int(value) if integer else float(value)


def _bounded(lo: float, hi: float, integer: bool = False):
    """A number in [lo, hi] (a numeric string too); null means the field's default."""

    def check(value, info: ValidationInfo):
        if value is None:
            raise PydanticUseDefault()
        return _number(value, info.field_name, lo, hi, integer)

    return Field(ge=lo, le=hi), BeforeValidator(check)


def _logprobs(value, info: ValidationInfo):
    """Chat's ``logprobs: true`` (with ``top_logprobs: k``) or completions' ``logprobs: k``."""
    if value is None or isinstance(value, bool):
        return value
    return _number(value, info.field_name, 0, MAX_TOP_LOGPROBS, integer=True)


def _flag(value):
    if value is None:
        raise PydanticUseDefault()
    if not isinstance(value, bool):
        raise refused(f"{_FIELD} must be true or false.")
    return value


def _stop(value, info: ValidationInfo):
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise refused(f"{info.field_name} must be a string or a list of strings.")
    if len(stops) > MAX_STOP_STRINGS or any(len(s) > 256 for s in stops):
        raise refused(f"{info.field_name}: at most {MAX_STOP_STRINGS} strings of at most 256 characters.")
    return [s for s in stops if s]


def _token_ids(value, info: ValidationInfo):
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or len(value) > MAX_STOP_TOKEN_IDS
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in value)
    ):
        raise refused(
            f"{info.field_name} must be a list of at most {MAX_STOP_TOKEN_IDS} token ids (integers >= 0)."
        )
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]  # true or false only (pydantic's bool takes "yes" and 1)
Tokens = Annotated[int, *_bounded(1, 2**31, integer=True)]
Temperature = Annotated[float, *_bounded(0.0, 2.0)]
TopP = Annotated[float, *_bounded(1e-9, 1.0)]
TopK = Annotated[int, *_bounded(-1, 1 << 20, integer=True)]
Seed = Annotated[int, *_bounded(-(2**63), 2**63 - 1, integer=True)]
Penalty = Annotated[float, *_bounded(-2.0, 2.0)]
RepetitionPenalty = Annotated[float, *_bounded(0.01, 10.0)]
TopLogprobs = Annotated[int, *_bounded(0, MAX_TOP_LOGPROBS, integer=True)]
Count = Annotated[int, *_bounded(1, MAX_N, integer=True)]  # OpenAI's n
StopStrings = Annotated[list[str], Field(max_length=MAX_STOP_STRINGS), BeforeValidator(_stop)]
StopTokenIds = Annotated[list[int], Field(max_length=MAX_STOP_TOKEN_IDS), BeforeValidator(_token_ids)]


# -- the options ---------------------------------------------------------------------------------
class GenerationOptions(RequestModel):
    """The options every protocol takes: OpenAI's fields, KServe's ``parameters`` (or scalar inputs of
    the same names), Triton's ``parameters``/``sampling_parameters``."""

    max_tokens: Tokens | None = Field(
        None, description="Most tokens to generate; default: the server's, within the context left."
    )
    temperature: Temperature = Field(1.0, description="0 (or below 1e-5) is greedy.")
    top_p: TopP = Field(1.0, description="Nucleus sampling: the smallest set this likely.")
    top_k: TopK = Field(0, description="Sample among the k likeliest; 0 or -1: all.")
    seed: Seed | None = Field(None, description="Repeatable sampling; choice j of n uses seed + j.")
    stop: StopStrings = Field([], description="Strings (a string or a list) that end the answer.")
    frequency_penalty: Penalty = 0.0
    presence_penalty: Penalty = 0.0
    repetition_penalty: RepetitionPenalty = Field(1.0, description="vLLM's; 1 is none.")
    ignore_eos: Flag = Field(False, description="Generate max_tokens even past the end token (vLLM's).")


class SamplingOptions(GenerationOptions):
    """All sampling options, by their OpenAI names: the KServe/Triton ones and OpenAI's own."""

    max_completion_tokens: Tokens | None = Field(
        None, description="OpenAI's newer name of max_tokens; it wins when both are sent."
    )
    stop_token_ids: StopTokenIds = Field([], description="Token ids that end the answer (vLLM's).")
    # chat sends logprobs: true + top_logprobs: k, completions logprobs: k (their models narrow the type)
    logprobs: Annotated[bool | int | None, BeforeValidator(_logprobs)] = None
    top_logprobs: TopLogprobs | None = None


def sampling_params(
    options: SamplingOptions, max_model_len: int, prompt_len: int, default_max_tokens: int
) -> SamplingParams:
    """The engine's parameters for one prompt of ``prompt_len`` tokens."""
    room = max(1, max_model_len - prompt_len)
    max_tokens = options.max_completion_tokens or options.max_tokens or min(default_max_tokens, room)
    logprobs = options.logprobs
    if isinstance(logprobs, bool):  # chat: logprobs: true + top_logprobs: k
        logprobs = (options.top_logprobs or 0) if logprobs else None
    temperature = options.temperature
    # as vLLM does: near zero is greedy, and a tiny positive value is raised to one whose scaled logits
    # stay finite (1e-40 would turn them into inf and the probabilities into nan)
    temperature = 0.0 if temperature < GREEDY_BELOW else max(temperature, MIN_TEMPERATURE)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        seed=options.seed,
        stop=options.stop,
        stop_token_ids=options.stop_token_ids,
        ignore_eos=options.ignore_eos,
        frequency_penalty=options.frequency_penalty,
        presence_penalty=options.presence_penalty,
        repetition_penalty=options.repetition_penalty,
        logprobs=logprobs,
    )
