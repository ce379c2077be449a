"""Reading an HTTP request's body: the one reader the serving worker, the gateway and the control plane's
JSON routes call. No FastAPI or torch here (the control plane imports it); the caller hands over the
body's chunks (``request.stream()``) and shapes a ``BodyError`` in its protocol's error format.

A body may come from anyone, so it is bounded twice: its bytes as they arrive (a chunked body declares
no length), and its JSON by ``BoundedJson`` (the dataset readers' decoder): nesting checked from the
bytes before the parser recurses, integer digits, and here lone surrogate escapes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from tuneforge.data.json_stream import BoundedJson, JsonLimitError
from tuneforge.data.limits import Limits
from tuneforge.errors import TuneforgeError

MAX_BODY_BYTES = 8 << 20  # an inference or API request; datasets and code come as uploads

# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, or the latter not preceded by the former:
# where a lone surrogate may be (an escaped backslash before it makes a false alarm; the walk decides).
_LONE_SURROGATE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F]"
)


class BodyError(TuneforgeError):
    """A body that cannot be read: ``status`` 413 (too large) or 400 (not the JSON it must be)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def too_large(limit: int, what: str = "request body", setting: str | None = None) -> BodyError:
    size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
    fix = f"send less, or raise {setting} on the server" if setting else "send less"
    return BodyError(413, f"{what} larger than the limit of {size}; {fix}.")


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int = MAX_BODY_BYTES
) -> bytes:
    """The whole body, refused (413) as soon as it is over ``limit``: by its Content-Length before a
    byte is read, or by the bytes counted as they arrive."""
    if content_length is not None and (not content_length.isdigit() or int(content_length) > limit):
        raise too_large(limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string or key holding a lone surrogate, or None. JSON's ``\\ud800`` escape
    parses into one, and every later encode (a database row, a file, a subprocess's argv, the answer
    itself) raises: a 500 from whichever route met it first."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{ascii(key)[1:-1]}".lstrip(".")
        if isinstance(key, str) and _lone_surrogate(key, inner):
            return inner
        if found := _lone_surrogate(item, inner):
            return found
    return None


def loads(raw: bytes, where: str = "the request body") -> Any:
    """A JSON value with nesting depth and integer digits bounded by the same settings as a dataset's
    records (TUNEFORGE_MAX_DEPTH, TUNEFORGE_MAX_NUMBER_DIGITS), and text that is valid Unicode;
    BodyError(400) naming what is wrong."""
    try:
        text = raw.decode("utf-8-sig")
        value = BoundedJson(Limits.from_settings()).loads(text)
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"{where} is not UTF-8 (invalid byte at offset {exc.start}).") from None
    except JsonLimitError as exc:
        raise BodyError(400, f"{where}: {exc}") from None
    except ValueError as exc:
        raise BodyError(400, f"{where} is not valid JSON: {exc}") from None
    # the regex only where a surrogate escape can be: \ud or \uD (a ms on 8 MiB, the regex 0.35 s)
    if (
        ("\\ud" in text or "\\uD" in text)
        and _LONE_SURROGATE_ESCAPE.search(text)
        and (path := _lone_surrogate(value, "")) is not None
    ):
        raise BodyError(
            400,
            f"{where}{': ' + path if path else ''} holds a lone surrogate escape (\\ud800-\\udfff without "
            "its pair); it is not valid Unicode. Send UTF-8 text.",
        )
    return value


def loads_object(raw: bytes, where: str = "the request body") -> dict:
    value = loads(raw, where)
    if not isinstance(value, dict):
        raise BodyError(400, f"{where} must be a JSON object; got {type(value).__name__}.")
    return value
