"""Whether the tests on the real default model may run: they need the package index to pull it."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest


def index_address() -> tuple[str, int]:
    """Where pip downloads from: PIP_INDEX_URL when set (a mirror), else PyPI."""
    url = urlsplit(os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    return url.hostname or "pypi.org", url.port or (80 if url.scheme == "http" else 443)


def require_package_index() -> None:
    """Skip where the index is unreachable, except in CI (CI=true), where that is a failure: the tests on
    the real default model must never pass by not running."""
    host, port = index_address()
    try:
        socket.create_connection((host, port), timeout=5).close()
        return
    except OSError as exc:
        reason = f"package index {host}:{port} unreachable ({exc})"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{reason} with CI=true: the tests on the real default model cannot run", pytrace=False)
    pytest.skip(reason)
