"""The stable ``code`` and ``params`` of a control-plane error, beside its English ``detail``.

The console says an error in the user's language from these (``error.<code>`` in its message files,
filled with ``params``); scripts can branch on ``code`` rather than on the wording of ``detail``. A
library error may set its own ``code``/``params`` attributes; otherwise its class gives the code.
"""

from __future__ import annotations

from tuneforge.errors import (
    ConfigError,
    ConflictError,
    DataError,
    ForbiddenError,
    NotFoundError,
    ResourceError,
    TuneforgeError,
)
from tuneforge.serve.body import BodyError

# A library error's HTTP status and code, most specific first (DataError and ConfigError share no base but
# TuneforgeError). A body error carries its own status (413, 400).
_BY_CLASS: list[tuple[type, int | None, str]] = [
    (BodyError, None, "bad_body"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (DataError, 422, "invalid_data"),
    (ConfigError, 422, "invalid_config"),
    (ResourceError, 503, "no_resource"),
]
_BY_STATUS = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def code_of(exc: TuneforgeError) -> str:
    own = getattr(exc, "code", None)
    if isinstance(own, str) and own:
        return own
    return next((code for cls, _, code in _BY_CLASS if isinstance(exc, cls)), "error")


def status_of(exc: TuneforgeError) -> int:
    """The HTTP status the control plane answers a library error with (500: a bug)."""
    if isinstance(exc, BodyError):
        return exc.status
    return next((status for cls, status, _ in _BY_CLASS if isinstance(exc, cls)), 500)


def status_code(status: int) -> str:
    """The code of an HTTP error raised without a library error (an unknown path, a wrong method)."""
    return _BY_STATUS.get(status, f"http_{status}")


def json_params(values: dict | None) -> dict:
    """Params that JSON carries: pydantic's ``ctx`` may hold the exception a validator raised."""
    out = {}
    for key, value in (values or {}).items():
        out[str(key)] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
    return out


def params_of(exc: Exception) -> dict:
    return json_params(getattr(exc, "params", None))
