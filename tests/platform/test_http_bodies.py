"""Request bodies as a hostile client sends them (issue 16 items 4, 7, 9, 10): deep JSON, huge integers and
chunked uploads without a length meet a bound and a 4xx in each protocol's shape (OpenAI ``{"error":
{…}}``, KServe/Triton ``{"error": "…"}``, control plane ``{"detail": …}``) on the worker, the gateway and
the control plane, all through the one reader in ``tuneforge.serve.body``."""

from __future__ import annotations

import asyncio
import io
import json
import random
import zipfile
from types import SimpleNamespace

import httpx
import pytest

from tests.support.platformhelp import RunningApp, make_client

DEEP = b"[" * 100_000 + b"]" * 100_000
KSERVE_DEEP = json.dumps(
    {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": "@"}]}
).replace('"@"', "[" * 990 + '"hi"' + "]" * 990)


# -- the reader --------------------------------------------------------------------------------------


def _depth(value) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(c) for c in children), default=0)
    return 0


def _random_json(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 12 or roll < 0.3:  # strings holding brackets, quotes and backslashes fool a naive scan
        return rng.choice(['[{"]}', '\\"[', 1, None, "x\\\\", "{", "]]]"])
    if roll < 0.65:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "[", '\\"{']): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_nesting_scan_agrees_with_the_parsed_depth():
    from tuneforge.data.json_depth import nesting_over

    rng = random.Random(16)
    for _ in range(1500):
        text = json.dumps(_random_json(rng))
        depth = _depth(json.loads(text))
        for limit in range(14):
            assert nesting_over(text.encode(), limit) == (depth > limit), (text, limit, depth)
    for depth in (63, 64, 65, 100_000):
        assert nesting_over(b"[" * depth + b"]" * depth, 64) == (depth > 64)
        assert nesting_over("[" * depth + "]" * depth, 64) == (depth > 64)  # a str, as datasets read


def test_bounded_json_checks_depth_before_parsing_and_hooks_only_long_integers(monkeypatch):
    """A body of 2M small lists took 12 s in the reader against 1.7 s in json.loads: a walk after the
    parse, a Python call per integer, and the lone-surrogate regex over every body. Each is now done
    only where it can find something."""
    import json as json_module

    from tuneforge.data.json_stream import BoundedJson, JsonLimitError
    from tuneforge.data.limits import Limits
    from tuneforge.serve import body

    parsed = []  # (text, whether the decoder converts integers with plain int, as C does)
    real_decode = json_module.JSONDecoder.decode
    monkeypatch.setattr(
        json_module.JSONDecoder,
        "decode",
        lambda self, text, *a: parsed.append((text, self.parse_int is int)) or real_decode(self, text, *a),
    )
    bounded = BoundedJson(Limits.from_settings())
    deep = "[" * 500 + "]" * 500  # parses (under the recursion limit), over TUNEFORGE_MAX_DEPTH
    with pytest.raises(JsonLimitError, match="TUNEFORGE_MAX_DEPTH"):
        bounded.loads(deep)
    assert parsed == [], "a text over the depth limit was parsed before it was refused"
    assert bounded.loads("[[1], [-22], 3.5]") == [[1], [-22], 3.5] and parsed[-1][1]
    with pytest.raises(JsonLimitError, match="5000 digits"):
        bounded.loads('{"n": ' + "7" * 5000 + "}")
    assert not parsed[-1][1]  # a long run of digits: the hook that bounds them

    searched = []

    class Spy:
        def search(self, text):
            searched.append(text)
            return real.search(text)

    real = body._LONE_SURROGATE_ESCAPE
    monkeypatch.setattr(body, "_LONE_SURROGATE_ESCAPE", Spy())
    assert body.loads(b'{"a": ["x\\u0041", 1]}') == {"a": ["xA", 1]}
    assert searched == [], "the surrogate regex ran over a body without a \\ud escape"
    with pytest.raises(body.BodyError, match="lone surrogate"):
        body.loads(b'{"a": "\\uD800"}')
    assert len(searched) == 1


def test_reader_bounds_bytes_as_they_arrive_and_names_the_settings():
    from tuneforge.serve.body import BodyError, loads, read_body

    pulled = []

    async def endless():
        while True:
            pulled.append(1 << 16)
            yield b"x" * (1 << 16)

    with pytest.raises(BodyError) as exc:
        asyncio.run(read_body(endless(), None, limit=1 << 20))
    assert exc.value.status == 413 and sum(pulled) <= (1 << 20) + (1 << 16)
    with pytest.raises(BodyError) as exc:
        loads(DEEP)
    assert exc.value.status == 400 and "TUNEFORGE_MAX_DEPTH" in str(exc.value)
    with pytest.raises(BodyError) as exc:
        loads(b'{"n": ' + b"7" * 5000 + b"}")
    assert exc.value.status == 400 and "5000 digits" in str(exc.value)
    assert "TUNEFORGE_MAX_NUMBER_DIGITS" in str(exc.value)


# -- the serving worker --------------------------------------------------------------------------------


@pytest.fixture
def worker():
    """The worker's routes over a stand-in state: bodies are refused before any model is touched."""
    from fastapi.testclient import TestClient

    from tuneforge.serve.app import create_app

    state = SimpleNamespace(
        metrics=None, engine=SimpleNamespace(ready=True), variant=lambda name: SimpleNamespace(id=name)
    )
    with TestClient(create_app(state)) as client:
        yield client


def test_worker_answers_deep_json_400_in_each_protocols_shape(worker):
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = worker.post(path, content=DEEP, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert "TUNEFORGE_MAX_DEPTH" in r.json()["error"]["message"] and r.json()["error"]["param"] == "body"
    for path in ("/v2/models/m/generate", "/v2/models/m/infer"):
        r = worker.post(path, content=DEEP)
        assert r.status_code == 400 and "TUNEFORGE_MAX_DEPTH" in r.json()["error"], r.text
    r = worker.post("/v2/models/m/infer", content=KSERVE_DEEP)
    assert r.status_code == 400 and "TUNEFORGE_MAX_DEPTH" in r.json()["error"], r.text


# -- the gateway and the control plane's JSON routes ----------------------------------------------------


@pytest.fixture
def api():
    with make_client() as client:
        yield client


def test_gateway_refuses_deep_json_and_keeps_the_connection(api):
    headers = {"Authorization": api.headers["Authorization"], "Content-Type": "application/json"}
    with RunningApp(api.app) as server, httpx.Client(base_url=server.url, headers=headers) as http:
        for path in ("/v1/chat/completions", "/v1/completions"):
            r = http.post(path, content=DEEP)
            assert r.status_code == 400, r.text
            assert "TUNEFORGE_MAX_DEPTH" in r.json()["error"]["message"]
            assert http.get("/v1/models").status_code == 200  # the same keep-alive connection still works
        r = http.post("/v1/chat/completions", content=b"x" * (9 << 20))
        assert r.status_code == 413 and r.json()["error"]["message"]
        r = http.get("/v1/chat/completions")
        assert r.status_code == 405 and r.headers["allow"] == "POST", (r.status_code, r.headers)
        assert r.json()["error"]["message"] == "Method Not Allowed"


def test_gateway_v2_bodies_over_the_limit_or_too_deep_are_refused_in_kserve_shape(api, worker):
    """/v2 bodies travel to the worker as bytes: the gateway bounds their size (413 before a byte goes
    on), the worker their nesting (its 400, relayed as it answered)."""
    from tests.support.platformhelp import fake_model
    from tuneforge.platform.db import Deployment

    fake_model("tiny")
    assert api.post("/api/v1/deployments", json={"model": "tiny", "name": "m"}).status_code == 201
    ctx = api.app.state.platform
    with ctx.store.session() as s:
        s.query(Deployment).filter_by(name="m").one().state = "ready"
    forwarded = []
    with RunningApp(worker.app) as upstream, RunningApp(api.app) as server:
        port = upstream.port

        def pick(dep_id):
            forwarded.append(dep_id)
            return SimpleNamespace(key="k", port=port, url=lambda path="": f"http://127.0.0.1:{port}{path}")

        ctx.deployments = SimpleNamespace(pick=pick, mark_unreachable=lambda *a: None)
        headers = {"Authorization": api.headers["Authorization"]}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            for path in ("/v2/models/m/infer", "/v2/models/m/generate"):
                r = http.post(path, content=DEEP)
                assert r.status_code == 400 and "TUNEFORGE_MAX_DEPTH" in r.json()["error"], r.text[:300]
            assert len(forwarded) == 2
            r = http.post("/v2/models/m/infer", content=b"x" * (9 << 20))
            assert r.status_code == 413 and "limit" in r.json()["error"], r.text[:300]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/datasets", "/api/v1/jobs", "/api/v1/tokens", "/api/v1/deployments", "/v1/fine_tuning/jobs"],
)
def test_control_plane_refuses_deep_json_and_huge_numbers_in_its_shape(api, path):
    for body, says in ((DEEP, "TUNEFORGE_MAX_DEPTH"), (b'{"x": ' + b"9" * 5000 + b"}", "5000 digits")):
        r = api.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (path, r.status_code, r.text[:300])
        message = r.json()["error"]["message"] if path.startswith("/v1/") else r.json()["detail"]
        assert says in message, message


def test_json_body_over_the_limit_is_413(api):
    r = api.post("/api/v1/jobs", content=b" " * (9 << 20), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def _spy_on_body_reading(monkeypatch) -> list[str]:
    """What the control plane's bounded routes did with a body: "read" and "parsed" as they happen,
    "parsed again" when Starlette's request.json() parses it a second time (FastAPI's own parse)."""
    import starlette.requests

    from tuneforge.serve import body

    done: list[str] = []
    read_body, loads, json_loads = body.read_body, body.loads, starlette.requests.json.loads

    async def spy_read_body(*a, **kw):
        done.append("read")
        return await read_body(*a, **kw)

    monkeypatch.setattr(body, "read_body", spy_read_body)
    monkeypatch.setattr(body, "loads", lambda raw, *a: done.append("parsed") or loads(raw, *a))
    monkeypatch.setattr(
        starlette.requests,
        "json",
        SimpleNamespace(loads=lambda raw: done.append("parsed again") or json_loads(raw)),
    )
    return done


@pytest.mark.parametrize("token", [None, "Bearer wrong", "Bearer tf-" + "x" * 40])
def test_a_caller_without_a_valid_token_gets_401_before_its_body_is_read(api, monkeypatch, token):
    """An unauthenticated 4 MB POST /api/v1/tokens had its 401 after the body was read and parsed
    (7.4 s on a loaded machine): the router's token check runs first now."""
    done = _spy_on_body_reading(monkeypatch)
    big = json.dumps({"name": "x", "pad": [[1]] * 500_000}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}
    api.headers.pop("Authorization")
    for path in ("/api/v1/tokens", "/api/v1/jobs", "/v1/fine_tuning/jobs"):
        r = api.post(path, content=big, headers=headers)
        assert r.status_code == 401, (path, r.status_code, r.text[:300])
    assert done == [], f"the body was {done} before the 401"


def test_a_bounded_route_parses_its_body_once_and_follows_fastapis_content_type_rule(api, monkeypatch):
    done = _spy_on_body_reading(monkeypatch)
    r = api.post("/api/v1/tokens", json={"name": "ci", "scope": "admin"})
    assert r.status_code in (200, 201), r.text
    assert done == ["read", "parsed"], done  # FastAPI took the value parsed by the bounded reader
    done.clear()
    # FastAPI (strict_content_type) reads a body without a Content-Type as no JSON: its 422, not a 400
    # from a parse FastAPI would never have made
    r = api.post("/api/v1/jobs", content=DEEP)
    assert r.status_code == 422 and "valid dictionary" in r.json()["detail"], r.text[:300]
    assert done == ["read"], done


# -- uploads: counted as they arrive ----------------------------------------------------------------------

LIMIT = 2 << 20
BOUNDARY = "tuneforge-test-boundary"


def _chunked_upload(app, path: str, field: str, filename: str, extra: dict[str, str]):
    """POST an endless multipart file part, chunked (no Content-Length), in process; returns the response
    and how many bytes the server pulled before answering."""
    pulled = [0]

    async def body():
        head = "".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in extra.items()
        )
        head += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        yield head.encode()
        line = b'{"prompt": "p", "completion": "c"}\n' * 2000
        while pulled[0] < 48 << 20:  # the old code spooled all of it before answering 413
            pulled[0] += len(line)
            yield line
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {
                "Authorization": app_token(app),
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            }
            return await client.post(path, content=body(), headers=headers)

    return asyncio.run(go()), pulled[0]


def app_token(app) -> str:
    return "Bearer " + (app.state.platform.home / "admin.token").read_text().strip()


@pytest.mark.parametrize(
    ("path", "field", "filename", "extra"),
    [
        ("/api/v1/datasets", "files", "big.jsonl", {"name": "big"}),
        ("/v1/files", "file", "big.jsonl", {"purpose": "fine-tune"}),
        ("/api/v1/jobs/code", "file", "code.zip", {}),
    ],
)
def test_chunked_upload_stops_at_the_limit(api, path, field, filename, extra):
    api.app.state.platform.max_upload_bytes = LIMIT
    r, pulled = _chunked_upload(api.app, path, field, filename, extra)
    assert r.status_code == 413, r.text[:300]
    assert pulled < LIMIT + (2 << 20), f"read {pulled >> 20} MiB for a {LIMIT >> 20} MiB limit"
    if path.startswith("/v1/"):  # the openai client retries a 500; a 413 in its shape it reports
        assert (
            r.json()["error"]["type"] == "invalid_request_error" and "limit" in r.json()["error"]["message"]
        )
    else:
        assert "limit" in r.json()["detail"]
    assert not any((api.app.state.platform.home / "datasets").glob("*/*")), "a failed upload left files"


def test_openai_client_gets_413_for_a_file_over_the_limit_not_a_500_it_retries(api):
    openai = pytest.importorskip("openai")
    api.app.state.platform.max_upload_bytes = 1000
    data = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    token = api.headers["Authorization"].removeprefix("Bearer ")
    with RunningApp(api.app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
        with pytest.raises(openai.APIStatusError) as exc:
            client.files.create(file=("t.jsonl", data * 50), purpose="fine-tune")
    assert exc.value.status_code == 413 and "limit" in exc.value.message, exc.value


# -- /v1/files reads JSONL as /api/v1/datasets does ------------------------------------------------------


def test_v1_files_accepts_line_separators_inside_strings(api):
    lines = [
        {"messages": [{"role": "user", "content": f"a{sep}b"}, {"role": "assistant", "content": "ok"}]}
        for sep in ("\u2028", "\u0085", "\u2029", "\x1c")
    ]
    data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    r = api.post("/api/v1/datasets", files=[("files", ("chat.jsonl", data))], data={"name": "chat"})
    assert r.status_code in (200, 201), r.text
    r = api.post("/v1/files", files={"file": ("chat.jsonl", data)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text


def test_v1_files_dpo_lines_convert_and_unreadable_ones_are_400(api):
    good = {
        "input": {"messages": [{"role": "user", "content": "2+2\u2028?"}]},
        "preferred_output": [{"role": "assistant", "content": "4"}],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
    }
    data = (json.dumps(good, ensure_ascii=False) + "\n").encode() * 3
    r = api.post("/v1/files", files={"file": ("dpo.jsonl", data)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    as_text = {**good, "input": "2+2?"}  # not OpenAI's shape: a located 400 (was a 500)
    r = api.post(
        "/v1/files", files={"file": ("dpo.jsonl", json.dumps(as_text))}, data={"purpose": "fine-tune"}
    )
    assert r.status_code == 400 and "field 'input'" in r.json()["error"]["message"], r.text
    for content in ("中文".encode("gbk") + b"\n", DEEP + b"\n"):
        r = api.post("/v1/files", files={"file": ("dpo.jsonl", content)}, data={"purpose": "fine-tune"})
        assert r.status_code == 400 and r.json()["error"]["message"], r.text[:300]


# -- a code zip naming a path as a file and as a folder ---------------------------------------------------


@pytest.mark.parametrize("names", [["a", "a/b"], ["a/b", "a"], ["a/", "a"], ["x/a", "x/a/b/c"]])
def test_code_zip_with_a_file_that_is_also_a_folder_is_422(api, names):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, b"" if name.endswith("/") else b"print(1)\n")
    r = api.post("/api/v1/jobs/code", files={"file": ("code.zip", buf.getvalue())})
    assert r.status_code == 422, r.text
    assert "is a file and also a folder" in json.dumps(r.json())


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/v1/jobs", '{"kind": "command", "name": "c", "command": ["echo", "\\ud800"]}', "command[1]"),
        (
            "/api/v1/jobs",
            '{"kind": "command", "name": "c", "command": ["echo"], "env": {"A": "\\udfff"}}',
            "env.A",
        ),
        (
            "/api/v1/jobs",
            '{"kind": "command", "name": "c", "command": ["echo"], "labels": {"a": "\\ud800"}}',
            "labels.a",
        ),
        ("/api/v1/models/register", '{"job": "j\\ud800", "name": "abc"}', "job"),
        ("/api/v1/models/pull", '{"name": "x\\ud800", "wait": false}', "name"),
        (
            "/api/v1/datasets",
            '{"name": "s", "records": [{"instruction": "a\\ud800", "output": "b"}]}',
            "records[0]",
        ),
        ("/v1/fine_tuning/jobs", '{"model": "m", "training_file": "f", "suffix": "\\ud800"}', "suffix"),
    ],
)
def test_a_lone_surrogate_escape_is_a_400_naming_its_field_not_a_500(api, path, body, field):
    """JSON allows ``\\ud800``, UTF-8 does not: each route's first encode of it (a database row, a
    file, a job's argv) was a plain-text 500, and the next request on the connection was reset."""
    r = api.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (path, r.status_code, r.text[:300])
    message = r.json()["error"]["message"] if path.startswith("/v1/") else r.json()["detail"]
    assert "lone surrogate" in message and field in message, message
    ok = api.post(  # a pair, an escaped \: valid text, refused only by the route's own schema
        path,
        content=json.dumps({"a": "\U0001f600 \\ud800"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert ok.status_code == (400 if path.startswith("/v1/") else 422), ok.text
    assert "lone surrogate" not in ok.text, ok.text


def test_worker_refuses_a_lone_surrogate_in_each_protocols_shape(worker):
    r = worker.post(
        "/v1/chat/completions",
        content=b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
    )
    assert r.status_code == 400 and "messages[0].content" in r.json()["error"]["message"], r.text
    r = worker.post("/v2/models/m/generate", content=b'{"text_input": "\\udc00"}')
    assert r.status_code == 400 and "text_input" in r.json()["error"], r.text
