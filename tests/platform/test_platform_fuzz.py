"""Hypothesis over the OpenAPI document: random path parameters, query strings and JSON bodies on every
operation never make the server answer 500 (a traceback is a bug; a 4xx with a message is the contract)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MEMO
from tests.support.platformhelp import fake_model, make_client

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
SEGMENT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
    st.sampled_from(["..", "%2e%2e", "ds-x", "job-x", "memo", "step-1", "ftjob-job-x", "file-x", "tiny"]),
)


@pytest.fixture
def api():
    fake_model()
    with make_client() as client:
        client.post("/api/v1/datasets", json={"name": "memo", "records": MEMO})
        client.post("/api/v1/jobs", json={"template": "sft-lora", "model": "tiny", "datasets": ["memo"]})
        yield client


def operations():
    import os
    import tempfile

    from tuneforge.platform.app import create_app  # noqa: F401  (the schema is static: build it once)
    from tuneforge.settings import get_settings

    with tempfile.TemporaryDirectory() as home:
        old = os.environ.get("TUNEFORGE_HOME")
        os.environ["TUNEFORGE_HOME"] = home
        get_settings.cache_clear()
        try:
            schema = create_app(supervise=False).openapi()
        finally:
            os.environ.pop("TUNEFORGE_HOME") if old is None else os.environ.__setitem__("TUNEFORGE_HOME", old)
            get_settings.cache_clear()
    ops = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if method == "post" and path in ("/api/v1/models/pull", "/api/v1/models/import"):
                continue  # they start a worker process (a download): covered by their own tests
            query = [
                p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p["name"] != "follow"
            ]
            ops.append((method.upper(), path, query))
    return ops


OPERATIONS = operations()


@pytest.mark.parametrize(("method", "path", "query"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_no_operation_answers_500(api, method, path, query):
    names = re.findall(r"\{([^}]+)\}", path)

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        params=st.fixed_dictionaries({n: SEGMENT for n in names}),
        qs=st.dictionaries(
            st.sampled_from(query or ["x"]), st.text(max_size=10) | st.integers().map(str), max_size=3
        ),
        body=JSON,
    )
    def check(params, qs, body):
        url = path
        for n, v in params.items():
            from urllib.parse import quote

            url = url.replace("{" + n + "}", quote(v, safe="") or "x")
        r = api.request(
            method, url, params=qs, content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert r.status_code < 500, (method, url, qs, body, r.status_code, r.text[:300])

    check()
