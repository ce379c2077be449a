"""In CI an unreachable package index fails the default-model tests instead of skipping them."""

from __future__ import annotations

import socket

import pytest

from tests.support.package_index import index_address, require_package_index


@pytest.fixture
def unreachable(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_ci_fails_when_the_index_is_unreachable(unreachable, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_package_index()


def test_outside_ci_it_skips(unreachable, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="unreachable"):
        require_package_index()


def test_the_index_is_pips(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://mirror.example:8080/simple")
    assert index_address() == ("mirror.example", 8080)
    monkeypatch.delenv("PIP_INDEX_URL")
    assert index_address() == ("pypi.org", 443)
