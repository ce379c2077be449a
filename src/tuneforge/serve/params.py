"""Sampling options read from any protocol's JSON (OpenAI fields, KServe ``parameters``, Triton
``sampling_parameters``) with one set of checks, so every protocol rejects the same bad values with
a 400 that names the field."""

from __future__ import annotations

import math

from .engine.base import GREEDY_BELOW, MIN_TEMPERATURE, BadRequest, SamplingParams

MAX_STOP_STRINGS = 8
MAX_STOP_TOKEN_IDS = 64
MAX_N = 16
MAX_TOP_LOGPROBS = 20


def _number(body: dict, key: str, lo: float, hi: float, default, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, str):  # KServe/Triton parameters often arrive as strings
        try:
            value = float(value) if not integer else int(value)
        except ValueError:
            shown = value if len(value) <= 40 else f"{value[:40]}… ({len(value):,} characters)"
            raise BadRequest(f"{key} must be a number; got {shown!r}.", key) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number; got {type(value).__name__}.", key)
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise BadRequest(f"{key} must be an integer; got {value}.", key)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}; got {value}.", key)
    return int(value) if integer else float(value)


def _temperature(body: dict) -> float:
    """As vLLM does: near zero is greedy, and a tiny positive value is raised to one whose scaled
    logits stay finite (1e-40 would turn them into inf and the probabilities into nan)."""
    t = _number(body, "temperature", 0.0, 2.0, 1.0)
    if t < GREEDY_BELOW:
        return 0.0
    return max(t, MIN_TEMPERATURE)


def stop_list(value, key: str = "stop") -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest(f"{key} must be a string or a list of strings.", key)
    if len(stops) > MAX_STOP_STRINGS or any(len(s) > 256 for s in stops):
        raise BadRequest(f"{key}: at most {MAX_STOP_STRINGS} strings of at most 256 characters.", key)
    return [s for s in stops if s]


def sampling_params(
    body: dict, max_model_len: int, prompt_len: int, default_max_tokens: int
) -> SamplingParams:
    """``body`` holds the options by their OpenAI names (vLLM's ``top_k``/``repetition_penalty`` too)."""
    room = max(1, max_model_len - prompt_len)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number({key: max_tokens}, key, 1, 2**31, None, integer=True)
    if max_tokens is None:
        max_tokens = min(default_max_tokens, room)
    logprobs = body.get("logprobs")
    top = body.get("top_logprobs")
    if isinstance(logprobs, bool):  # chat: logprobs: true + top_logprobs: k
        logprobs = (
            _number({"top_logprobs": top}, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0, True) if logprobs else None
        )
    elif logprobs is not None:  # completions: logprobs: k
        logprobs = _number(body, "logprobs", 0, MAX_TOP_LOGPROBS, None, integer=True)
    seed = body.get("seed")
    if seed is not None:
        seed = _number(body, "seed", -(2**63), 2**63 - 1, None, integer=True)
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise BadRequest("ignore_eos must be true or false.", "ignore_eos")
    stop_ids = body.get("stop_token_ids") or []
    if (
        not isinstance(stop_ids, list)
        or len(stop_ids) > MAX_STOP_TOKEN_IDS
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in stop_ids)
    ):
        raise BadRequest(
            f"stop_token_ids must be a list of at most {MAX_STOP_TOKEN_IDS} token ids (integers >= 0).",
            "stop_token_ids",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_temperature(body),
        top_p=_number(body, "top_p", 1e-9, 1.0, 1.0),
        top_k=_number(body, "top_k", -1, 1 << 20, 0, integer=True),
        seed=seed,
        stop=stop_list(body.get("stop")),
        stop_token_ids=stop_ids,
        ignore_eos=ignore_eos,
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0, 0.0),
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0, 0.0),
        repetition_penalty=_number(body, "repetition_penalty", 0.01, 10.0, 1.0),
        logprobs=logprobs,
    )


def count(body: dict, key: str = "n") -> int:
    return _number(body, key, 1, MAX_N, 1, integer=True)
