"""Deployments on a real `tuneforge server` (127.0.0.1): a registered fine-tune (an OpenAI ``ft:`` name)
deployed as base + adapter, called through the gateway by the real openai and tritonclient packages and
curl with the issue's seed bodies; the token matrix; a SIGKILLed worker comes back; a server restart
brings the deployment back (adopted after a crash, restarted after a clean stop); stop/start/rm; a hung
(SIGSTOPped) worker leaves the rotation and is replaced. The server believes it has 2 GPUs
(TUNEFORGE_GPUS=2): every worker gets one as CUDA_VISIBLE_DEVICES and still serves on the CPU."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import make_lora_adapter, make_serving_model
from tests.support.platformhelp import wait_for
from tests.support.servehelp import stream_chat

FT = "ft:tiny-chat:demo:abc123"
SEED_INFER = {
    "id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298",
    "inputs": [
        {
            "name": "4b7c7d4a-51e4-43c8-af61-04639f6ef4bc",
            "shape": [1],
            "datatype": "BYTES",
            "data": ["Give three tips for staying healthy."],
        }
    ],
}
SEED_GENERATE = {
    "text_input": "hello",
    "stream": False,
    "sampling_parameters": '{"temperature": 0.7, "top_p": 0.95, "max_tokens": 1024}',
}
ASK = [{"role": "user", "content": "Give three tips for staying healthy."}]


def _register(ctx, name: str, adapter_src, job_id: str) -> None:
    """A succeeded training job whose final/ is the adapter, registered as ``name`` (as training and the
    OpenAI fine-tuning API leave it)."""
    import shutil

    from tuneforge.platform import registry
    from tuneforge.platform.db import Job

    folder = ctx.jobs_dir / job_id
    shutil.copytree(adapter_src, folder / "final")
    with ctx.store.session() as s:
        s.add(
            Job(
                id=job_id,
                kind="train",
                state="succeeded",
                spec={"model": "tiny-chat"},
                folder=str(folder),
                created_at=time.time(),
                extra={},
            )  # fmt: skip
        )
    registry.register(ctx, job_id, None, name)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with a tiny chat model in the store, two adapters trained on *that* folder, registered
    as ``FT`` and ``tiny-beta``."""
    from tests.platform.test_platform_server import Server  # noqa: F401 (the same server helper)
    from tuneforge.models.pull import import_model
    from tuneforge.platform.app import build_platform
    from tuneforge.settings import get_settings

    root = tmp_path_factory.mktemp("deploy")
    old = os.environ.get("TUNEFORGE_HOME")
    os.environ["TUNEFORGE_HOME"] = str(root / "home")
    get_settings.cache_clear()
    try:
        base = make_serving_model(root / "src-model")
        import_model(str(base), "tiny-chat", lambda *a: None)
        stored = get_settings().models_dir / "tiny-chat"
        ctx, _ = build_platform()
        _register(ctx, FT, make_lora_adapter(stored, root / "a1", 1), "job-000000000001")
        _register(ctx, "tiny-beta", make_lora_adapter(stored, root / "a2", 2), "job-000000000002")
        _register(ctx, "tiny-dora", make_lora_adapter(stored, root / "a3", 3, dora=True), "job-000000000003")
        ctx.store.dispose()
        yield get_settings().root
    finally:
        if old is None:
            os.environ.pop("TUNEFORGE_HOME", None)
        else:
            os.environ["TUNEFORGE_HOME"] = old
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def server(home):
    from tests.platform.test_platform_server import Server

    srv = Server(home)
    # Two (pretend) GPUs, and liveness probes in seconds instead of tens of seconds: a probe every 0.5 s,
    # 1.5 s to answer, killed after 4 misses (about 8 s).
    srv.env.update(
        TUNEFORGE_GPUS="2",
        TUNEFORGE_DEPLOY_PROBE_INTERVAL="0.5",
        TUNEFORGE_DEPLOY_PROBE_TIMEOUT="1.5",
        TUNEFORGE_DEPLOY_UNRESPONSIVE_AFTER="4",
    )
    srv.start()
    yield srv
    srv.stop()
    for pid in _all_worker_pids(home):  # nothing left behind, whatever a test did
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _all_worker_pids(home) -> list[int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{home / 'tuneforge.db'}")
    with engine.connect() as conn:
        pids = [r[0] for r in conn.execute(text("SELECT pid FROM deployment_replicas WHERE pid IS NOT NULL"))]
    engine.dispose()
    return pids


def _dep(http, name="ftdemo") -> dict:
    return http.get(f"/api/v1/deployments/{name}").json()


def _ready(http, name="ftdemo", timeout=180.0) -> dict:
    def check():
        d = _dep(http, name)
        assert d["state"] != "failed", d
        return d if d["state"] == "ready" else None

    return _wait(check, timeout, f"deployment {name} ready", http=http, name=name)


def _wait(predicate, timeout=180.0, what="condition", http=None, name=None):
    """``wait_for``; given the deployment, a timeout says what it was doing (its state, workers and
    events), so that a failure on a loaded CI machine can be read from the log alone."""
    try:
        return wait_for(predicate, timeout, what)
    except AssertionError as exc:
        if http is None:
            raise
        d = _dep(http, name)
        seen = {k: d.get(k) for k in ("state", "replicas", "replicas_ready", "workers", "last_error")}
        events = [(e["event"], e["message"]) for e in _events(http, name)]
        raise AssertionError(f"{exc}\n{name}: {seen}\nevents: {events}") from None


def _events(http, name="ftdemo") -> list[dict]:
    return http.get(f"/api/v1/deployments/{name}/events").json()["data"]


def _token(http, scope: str) -> str:
    return http.post("/api/v1/tokens", json={"name": scope, "scope": scope}).json()["token"]


def _visible_gpus(pid: int) -> list[int]:
    from tuneforge.jobs.executor import visible_gpus_of

    return visible_gpus_of(pid)


def _alive(pid: int) -> bool:
    from tuneforge.jobs.executor import process_start_ticks

    return process_start_ticks(pid) is not None


@pytest.fixture(scope="module")
def deployed(server):
    """The ft: name deployed in one call, with a second adapter; (deployment, its token)."""
    http = server.http()
    t0 = time.monotonic()
    r = http.post(
        "/api/v1/deployments", json={"model": FT, "name": "ftdemo", "adapters": {"beta": "tiny-beta"}}
    )
    assert r.status_code == 201, r.text
    d = _ready(http)
    print(f"cold start of the tiny deployment: {time.monotonic() - t0:.1f}s")
    assert d["base_model"] == "tiny-chat" and d["adapters"] == ["ft-tiny-chat-demo-abc123", "beta"]
    assert d["default_model_id"] == "ft-tiny-chat-demo-abc123" and d["replicas_ready"] == 1
    assert d["endpoints"]["infer"] == f"{server.url}/v2/models/ftdemo/infer"
    return d, _token(http, "deployment:ftdemo")


def test_openai_client_lists_chats_and_streams_through_the_gateway(server, deployed):
    import openai

    d, token = deployed
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token)
    ids = {m.id for m in client.models.list()}
    assert {"ftdemo", "ftdemo/tiny-chat", "ftdemo/beta", "ftdemo/ft-tiny-chat-demo-abc123", FT} <= ids

    def ask(model):
        r = client.chat.completions.create(model=model, messages=ASK, max_tokens=12, temperature=0)
        return r.choices[0].message.content

    fine_tuned, base, beta, by_ft_name = ask("ftdemo"), ask("ftdemo/tiny-chat"), ask("ftdemo/beta"), ask(FT)
    assert (
        fine_tuned == by_ft_name
    )  # the deployment's default is the fine-tune, also callable by its ft: name
    assert len({fine_tuned, base, beta}) == 3  # three different models answered

    # The gateway answers exactly as the worker itself does.
    w = d["workers"][0] if d["workers"] else _dep(server.http())["workers"][0]
    key = (server.home / "deployments" / d["id"] / "replica-0.key").read_text()
    direct = openai.OpenAI(base_url=f"http://127.0.0.1:{w['port']}/v1", api_key=key)
    r = direct.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == base

    chunks = list(
        client.chat.completions.create(
            model="ftdemo",
            messages=ASK,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fine_tuned
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    c = client.completions.create(model="ftdemo/tiny-chat", prompt="The capital of France", max_tokens=5)
    assert c.usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError):
        ask("no-such-deployment")


def test_stream_is_relayed_as_it_comes(server, deployed):
    """The first SSE chunk arrives long before the answer ends: nothing is buffered whole."""
    _, token = deployed
    body = {"model": "ftdemo", "messages": ASK, "max_tokens": 400, "stream": True,
            "temperature": 0, "ignore_eos": True}  # fmt: skip
    start = time.monotonic()
    first = None
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", json=body, timeout=120,
        headers={"Authorization": f"Bearer {token}"},
    ) as r:  # fmt: skip
        assert r.status_code == 200
        n = 0
        for line in r.iter_lines():
            if line.startswith("data: ") and first is None:
                first = time.monotonic() - start
            n += line.startswith("data: ")
    total = time.monotonic() - start
    assert line == "" or line.startswith("data: ")
    assert n > 50 and first < total / 3, (first, total, n)


def test_a_poison_request_among_8_streams_through_the_gateway(server, deployed):
    """``temperature: 1e-40`` used to make torch.multinomial raise inside the engine step, which
    aborted every sequence running on the worker. Now it is greedy: the 8 streams decoding beside it
    finish their answers, and it answers what temperature 0 answers."""
    import threading

    import openai

    _, token = deployed
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=300)
    out: dict = {}

    def healthy(i: int):
        stream_chat(client, out, i, "ftdemo", ASK, max_tokens=60, seed=i)

    threads = [threading.Thread(target=healthy, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    _wait(lambda: all(("started", i) in out for i in range(8)), 120, "8 streams decoding")
    poison = client.chat.completions.create(
        model="ftdemo", messages=ASK, max_tokens=10, temperature=1e-40, stream=True
    )
    chunks = list(poison)
    for t in threads:
        t.join(300)
    assert [out[i][1] if isinstance(out[i], tuple) else out[i] for i in range(8)] == ["length"] * 8
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    greedy = client.chat.completions.create(model="ftdemo", messages=ASK, max_tokens=10, temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == greedy.choices[0].message.content


def test_a_huge_legal_chat_through_the_gateway_is_refused_and_the_worker_lives_on(server, deployed):
    """7.3 MiB of chat (120 messages of 65,000 characters: legal JSON under the body limit) used to be
    rendered and tokenized on the worker's event loop, its health probes went unanswered and the
    supervisor killed it. Now it is refused by its characters (a 400 naming the limit) while a small
    request is answered, and the worker is the same process afterwards."""
    import threading

    import openai

    http = server.http()
    _, token = deployed
    pid = _ready(http)["workers"][0]["pid"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=300)
    huge = [{"role": ("user", "assistant")[i % 2], "content": chr(97 + i % 26) * 65_000} for i in range(120)]
    out: dict = {}

    def small():
        out["small"] = client.chat.completions.create(model="ftdemo", messages=ASK, max_tokens=4)

    t = threading.Thread(target=small)
    t.start()
    with pytest.raises(openai.BadRequestError, match="characters") as err:
        client.chat.completions.create(model="ftdemo", messages=huge, max_tokens=4)
    assert "holds at most" in err.value.message
    t.join(120)
    assert out["small"].choices[0].finish_reason in ("stop", "length")
    time.sleep(3)  # six probe intervals
    d = _dep(http)
    assert d["state"] == "ready" and d["workers"][0]["pid"] == pid
    assert not [e for e in _events(http) if e["event"] == "unresponsive"]


def test_tritonclient_and_curl_seed_bodies_through_the_gateway(server, deployed):
    import numpy as np
    import tritonclient.http as triton

    _, token = deployed
    auth = {"Authorization": f"Bearer {token}"}
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready("ftdemo", headers=auth)
    prompt = np.array([b"Give three tips for staying healthy."], dtype=object)
    answers = []
    for binary in (True, False):
        inp = triton.InferInput("text_input", [1], "BYTES")
        inp.set_data_from_numpy(prompt, binary_data=binary)
        out = triton.InferRequestedOutput("text_output", binary_data=binary)
        params = {"max_tokens": 8, "temperature": 0}
        result = client.infer("ftdemo", [inp], outputs=[out], headers=dict(auth), parameters=params)
        text = result.as_numpy("text_output")[0]
        answers.append(text.decode() if isinstance(text, bytes) else text)
    assert answers[0] == answers[1] and answers[0]

    import asyncio

    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def kserve_infer():
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        inp = InferInput(name="prompt", shape=[1], datatype="BYTES", data=[prompt[0].decode()])
        request = InferRequest(model_name="ftdemo", infer_inputs=[inp], request_id="r-1",
                               parameters={"max_tokens": 8, "temperature": 0})  # fmt: skip
        return await rest.infer(server.url, request, model_name="ftdemo", headers=dict(auth))

    response = asyncio.run(kserve_infer())
    assert response.id == "r-1" and response.outputs[0].data == [answers[0]]

    def curl(path: str, body: dict) -> dict:
        out = subprocess.run(
            ["curl", "-sS", "-f", "-H", f"Authorization: Bearer {token}", "-H",
             "Content-Type: application/json", f"{server.url}{path}", "--data-binary", json.dumps(body)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    r = curl("/v2/models/ftdemo/infer", SEED_INFER)
    assert r["id"] == SEED_INFER["id"] and isinstance(r["outputs"][0]["data"][0], str)
    g = curl("/v2/models/ftdemo/generate", SEED_GENERATE)
    assert set(g) >= {"model_name", "model_version", "text_output"}
    with httpx.stream(
        "POST", server.url + "/v2/models/ftdemo/generate_stream", headers=auth, timeout=120,
        json={"text_input": "hello", "parameters": {"max_tokens": 6, "temperature": 0}},
    ) as s:  # fmt: skip
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    assert events and events[-1].get("finish_reason")


def test_token_matrix(server, deployed):
    http = server.http()
    _, token = deployed
    other = _token(http, "deployment:other")
    revoked = http.post("/api/v1/tokens", json={"name": "to-revoke", "scope": "deployment:ftdemo"}).json()
    headers = {"Authorization": f"Bearer {revoked['token']}"}
    assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 200
    http.delete(f"/api/v1/tokens/{revoked['id']}")
    revoked = revoked["token"]
    chat = {"model": "ftdemo", "messages": ASK, "max_tokens": 2}
    infer = SEED_INFER
    cases = {
        "none": ({}, 401),
        "garbage": ({"Authorization": "Bearer nope"}, 401),
        "wrong secret": ({"Authorization": f"Bearer {token[:-4]}AAAA"}, 401),
        "revoked": ({"Authorization": f"Bearer {revoked}"}, 401),
        "other deployment": ({"Authorization": f"Bearer {other}"}, 403),
    }
    for what, (headers, status) in cases.items():
        r = httpx.post(server.url + "/v1/chat/completions", json=chat, headers=headers, timeout=60)
        assert r.status_code == status, (what, r.text)
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}  # OpenAI's shape
        r = httpx.post(server.url + "/v2/models/ftdemo/infer", json=infer, headers=headers, timeout=60)
        assert r.status_code == status, (what, r.text)
        assert isinstance(r.json()["error"], str)  # the v2 shape
    assert (
        httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {other}"}).json()["data"]
        == []
    )
    mine = {"Authorization": f"Bearer {token}"}
    assert httpx.get(server.url + "/api/v1/deployments", headers=mine).status_code == 403
    assert httpx.get(server.url + "/v1/files", headers=mine).status_code == 403
    r = httpx.post(server.url + "/v2/models/nope/infer", json=infer, headers=mine)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert http.get("/api/v1/deployments/nope").status_code == 404
    # in use: the base model and the registered fine-tune cannot be deleted while deployed
    assert http.delete("/api/v1/models/tiny-chat").status_code == 409
    assert http.delete(f"/api/v1/models/registered/{FT}").status_code == 409


def test_cli_list_show_and_chat_by_deployment_name(server, deployed):
    out = server.cli("deployments", "list", "--json")
    listed = json.loads(out.stdout)
    assert [d["name"] for d in listed] == ["ftdemo"] and listed[0]["requests"] >= 10  # counted by the gateway
    out = server.cli("deployments", "show", "ftdemo")
    assert "ready" in out.stdout and "created" in out.stdout
    assert server.cli("deployments", "show", "nope", check=False).returncode == 2
    out = server.cli("chat", "ftdemo", "-p", "hello", "--max-tokens", "6", "--compare", "ftdemo/tiny-chat")
    assert "ftdemo @" in out.stdout and "ftdemo/tiny-chat @" in out.stdout


def test_sigkilled_worker_comes_back(server, deployed):
    http = server.http()
    pid = _dep(http)["workers"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: any(e["event"] == "restarted" for e in _events(http)), 30, "a restarted event")
    d = _ready(http)
    assert d["workers"][0]["pid"] != pid and d["workers"][0]["restarts"] == 1
    r = http.post("/v1/chat/completions", json={"model": "ftdemo", "messages": ASK, "max_tokens": 3})
    assert r.status_code == 200


def test_a_worker_killed_mid_stream_makes_the_openai_client_raise(server, deployed):
    """The gateway used to end the body cleanly when the worker died mid-answer (no finish_reason, no
    [DONE]), and the openai SDK returned the truncated answer as if complete. Now the stream ends with
    an error event, which the SDK raises as APIError."""
    import openai

    http = server.http()
    _, token = deployed
    pid = _ready(http)["workers"][0]["pid"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=300)
    stream = client.chat.completions.create(
        model="ftdemo", messages=ASK, max_tokens=1500, temperature=0, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    got = []
    with pytest.raises(openai.APIError, match="stopped in the middle of this answer"):
        for chunk in stream:
            got.append(chunk)
            if len(got) == 3:
                os.kill(pid, signal.SIGKILL)
    assert len(got) >= 3 and not any(c.choices and c.choices[0].finish_reason for c in got)

    def replaced():
        d = _dep(http)
        return d["state"] == "ready" and d["workers"] and d["workers"][0]["pid"] != pid

    _wait(replaced, 180, "the killed worker replaced")  # for the tests after this one


def test_server_crash_adopts_and_clean_restart_restarts(server, deployed):
    http = server.http()
    pid = _dep(http)["workers"][0]["pid"]
    server.kill()  # SIGKILL: the worker, in its own session, keeps serving
    assert _alive(pid)
    server.start()
    http = server.http()
    d = _ready(http, timeout=30)
    assert d["workers"][0]["pid"] == pid  # adopted, not restarted
    assert d["workers"][0]["gpus"] == _visible_gpus(pid)  # its GPU, found in its environment
    assert any("adopted" in e["message"] for e in _events(http))
    server.stop()  # a clean stop ends the workers; the deployment stays wanted
    _wait(lambda: not _alive(pid), 15, "the worker to end with the server")
    server.start()
    http = server.http()
    d = _ready(http)
    assert d["workers"][0]["pid"] != pid
    r = http.post("/v1/chat/completions", json={"model": FT, "messages": ASK, "max_tokens": 3})
    assert r.status_code == 200, r.text


def test_stop_start_rm(server, deployed):
    http = server.http()
    pid = _dep(http)["workers"][0]["pid"]
    assert server.cli("deployments", "stop", "ftdemo").returncode == 0
    assert _dep(http)["state"] == "stopped" and not _alive(pid)
    r = http.post("/v1/chat/completions", json={"model": "ftdemo", "messages": ASK, "max_tokens": 3})
    assert r.status_code == 404 and "stopped" in r.json()["error"]["message"]
    out = server.cli("deployments", "start", "ftdemo", "--wait", "--json")
    d = json.loads(out.stdout)
    assert d["state"] == "ready"
    pid = d["workers"][0]["pid"]
    kinds = [e["event"] for e in _events(http)]
    assert kinds[:2] == ["created", "starting"] and "stopped" in kinds and "restarted" in kinds
    server.cli("deployments", "rm", "ftdemo")
    assert http.get("/api/v1/deployments/ftdemo").status_code == 404 and not _alive(pid)
    assert http.delete("/api/v1/models/registered/tiny-beta").status_code == 200  # no longer in use


def test_bad_requests_are_clear(server):
    http = server.http()
    r = http.post("/api/v1/deployments", json={"model": "nope"})
    assert r.status_code == 404 and "no model" in r.json()["detail"]
    r = http.post("/api/v1/deployments", json={"model": "tiny-chat", "name": "Bad Name"})
    assert r.status_code == 422
    r = http.post("/api/v1/deployments", json={"model": "tiny-chat", "replicas": 0})
    assert r.status_code == 422
    r = http.post("/api/v1/deployments", json={"model": "tiny-chat", "adapters": {"x": "tiny-chat"}})
    assert r.status_code == 404  # an adapter must be a registered fine-tune
    out = server.cli("deployments", "create", "--model", "tiny-chat", "--adapter", "oops", check=False)
    assert out.returncode == 2 and "ALIAS=MODEL" in out.stderr
    assert sys.executable  # (keeps the import used on every platform)


def test_a_hung_worker_leaves_the_rotation_at_once_and_is_replaced(server):
    """SIGSTOP: the process lives but answers nothing. Out of rotation at the first missed probe (the
    other replica serves; with none left the gateway says 503 at once instead of hanging), back in
    rotation if it answers again, SIGKILLed and restarted after 4 misses."""
    http = server.http()
    http.delete("/api/v1/deployments/ftdemo")  # if an earlier test left it: it would hold a GPU
    r = http.post("/api/v1/deployments", json={"model": "tiny-chat", "name": "live", "replicas": 2})
    assert r.status_code == 201, r.text

    def workers(need_ready: int = 2):
        d = _dep(http, "live")
        assert d["state"] != "failed", d
        ws = {w["replica"]: w for w in d["workers"] if w["ready"]}
        return ws if len(ws) >= need_ready else None

    ws = _wait(workers, 180, "two ready replicas", http=http, name="live")
    a, b = ws[0]["pid"], ws[1]["pid"]
    # One GPU each from the pool, as CUDA_VISIBLE_DEVICES; CPU-only torch serves on the CPU regardless.
    assert sorted([ws[0]["gpus"], ws[1]["gpus"]]) == [[0], [1]]
    assert _visible_gpus(a) == ws[0]["gpus"] and _visible_gpus(b) == ws[1]["gpus"]

    def ask():
        body = {"model": "live", "messages": ASK, "max_tokens": 2}
        return http.post("/v1/chat/completions", json=body, timeout=30)

    assert ask().status_code == 200
    os.kill(a, signal.SIGSTOP)
    os.kill(b, signal.SIGSTOP)
    try:
        _wait(lambda: workers(0) == {}, 15, "both replicas out of rotation")
        start = time.monotonic()
        r = ask()
        assert r.status_code == 503 and time.monotonic() - start < 3, r.text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(b, signal.SIGCONT)  # b recovers before its 4th miss: back in rotation, not restarted
    _wait(lambda: (workers(1) or {}).get(1), 15, "replica 1 back in rotation", http=http, name="live")
    for _ in range(4):  # a is still stopped: round robin over b alone, no request waits on a
        assert ask().status_code == 200
    killed = _wait(
        lambda: [e for e in _events(http, "live") if e["event"] == "unresponsive"], 30, "unresponsive"
    )
    assert len(killed) == 1 and killed[0]["message"].startswith(f"replica 0 (pid {a}) did not answer")
    assert "killed" in killed[0]["message"] and not _alive(a)
    ws = _wait(workers, 120, "replica 0 restarted", http=http, name="live")
    assert ws[0]["pid"] != a and ws[0]["restarts"] == 1 and ws[0]["gpus"] == _visible_gpus(ws[0]["pid"])
    assert ws[1]["pid"] == b and ws[1]["restarts"] == 0
    messages = [e["message"] for e in _events(http, "live")]
    assert any(m.startswith("replica 1 answers again after") for m in messages)
    assert ask().status_code == 200
    assert http.delete("/api/v1/deployments/live").status_code == 204
    assert not _alive(b)


FAKE_WORKER = (
    "import json, os, time; "
    "json.dump(os.environ.get('CUDA_VISIBLE_DEVICES'), open(f'cvd-{os.getpid()}.json', 'w')); "
    "time.sleep(60)"
)


def test_replicas_lease_gpus_from_the_jobs_pool_and_wait_for_one(monkeypatch):
    """The supervisor's GPU bookkeeping, ticked by hand, with workers that only write down their
    CUDA_VISIBLE_DEVICES (no model): 2 GPUs, 3 replicas → the third waits; a job cannot start either;
    a crash gives its GPU to the waiting replica; removal gives all back. No GPUs → env untouched."""
    from tests.support.platformhelp import fake_model
    from tuneforge.jobs import executor
    from tuneforge.jobs.executor import Launch, LocalExecutor
    from tuneforge.platform import deployments as service
    from tuneforge.platform.app import build_platform

    monkeypatch.setattr(executor, "WORKER", [sys.executable, "-c", FAKE_WORKER])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "as-before")
    fake_model("tiny")

    def seen(ctx, dep, pid) -> str:
        path = service.folder(ctx, dep.id) / f"cvd-{pid}.json"
        _wait(path.exists, 20, f"worker {pid} to write its environment")
        return json.loads(path.read_text())

    ctx, _ = build_platform(executor=LocalExecutor(max_concurrent=4, gpu_count=2))
    sup = ctx.deployments
    try:
        dep = service.create(ctx, "tiny", name="three", replicas=3)
        sup.tick()
        ws = {w["replica"]: w for w in sup.workers(dep.id)}
        assert sorted(ws) == [0, 1] and (ws[0]["gpus"], ws[1]["gpus"]) == ([0], [1])
        assert seen(ctx, dep, ws[0]["pid"]) == "0" and seen(ctx, dep, ws[1]["pid"]) == "1"
        waits = [e for e in service.events(ctx, "three") if e["event"] == "waiting"]
        assert len(waits) == 1 and waits[0]["message"].startswith("replica 2 waits for a GPU")
        sup.tick()  # still waiting: no second event for the same wait
        assert [e["event"] for e in service.events(ctx, "three")].count("waiting") == 1
        assert service.get(ctx, "three").state == "starting"
        assert not ctx.executor.can_start(1)  # what the job queue asks: a job waits too

        os.kill(ws[0]["pid"], signal.SIGKILL)
        _wait(lambda: not _alive(ws[0]["pid"]) or sup._slots[dep.id][0].worker.exit_code() is not None, 10)
        sup.tick()  # replica 0 crashed: its GPU goes to the waiting replica 2, replica 0 waits in turn
        ws = {w["replica"]: w for w in sup.workers(dep.id)}
        assert sorted(ws) == [1, 2] and ws[2]["gpus"] == [0] and seen(ctx, dep, ws[2]["pid"]) == "0"

        def replica_0_waits():  # after its restart backoff
            sup.tick()
            return [e["event"] for e in service.events(ctx, "three")].count("waiting") == 2

        _wait(replica_0_waits, 10, "replica 0 waiting for a GPU")
        assert sorted(w["replica"] for w in sup.workers(dep.id)) == [1, 2]

        service.remove(ctx, "three")
        sup.tick()
        assert not sup.workers(dep.id) and ctx.executor.can_start(2)
        ctx.executor.submit(Launch("job-1", [sys.executable, "-c", "pass"], ctx.jobs_dir / "job-1", gpus=2))
        assert ctx.executor._gpus["job-1"] == [0, 1]  # the job got both back
    finally:
        sup.stop()
        ctx.store.dispose()

    ctx, _ = build_platform(executor=LocalExecutor(max_concurrent=4, gpu_count=0))
    sup = ctx.deployments
    try:
        dep = service.create(ctx, "tiny", name="cpu")
        sup.tick()
        [w] = sup.workers(dep.id)
        assert w["gpus"] == [] and seen(ctx, dep, w["pid"]) == "as-before"  # a CPU machine: as it was
    finally:
        sup.stop()
        ctx.store.dispose()


def _shut_down(sup, ctx, pids) -> None:
    """The supervisor and the store of a test's platform, and any worker of ``pids`` still alive."""
    sup.stop()
    ctx.store.dispose()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_a_replica_launched_while_its_deployment_is_deleted_is_stopped_and_gives_its_gpu_back(monkeypatch):
    """The API's DELETE (terminate, on its own thread) can land while the supervisor launches a replica.
    The worker used to be kept in the slot terminate had already taken away: it ran untracked and held
    its GPU for ever, so a later deployment's second replica waited for a GPU without end."""
    from tests.support.platformhelp import fake_model
    from tuneforge.jobs import executor
    from tuneforge.jobs.executor import LocalExecutor
    from tuneforge.platform import deployments as service
    from tuneforge.platform.app import build_platform

    monkeypatch.setattr(executor, "WORKER", [sys.executable, "-c", FAKE_WORKER])
    fake_model("tiny")
    ctx, _ = build_platform(executor=LocalExecutor(max_concurrent=4, gpu_count=2))
    sup, launched = ctx.deployments, []
    real_submit = ctx.executor.submit

    def submit_then_delete(launch):
        handle = real_submit(launch)
        launched.append(handle.pid)
        service.remove(ctx, "gone")  # the DELETE lands while the supervisor is in _spawn
        return handle

    try:
        dep = service.create(ctx, "tiny", name="gone")
        monkeypatch.setattr(ctx.executor, "submit", submit_then_delete)
        sup.tick()
        assert len(launched) == 1 and not sup.workers(dep.id)
        assert not _alive(launched[0]), "the launched worker must be stopped, not left running"
        assert ctx.executor.can_start(2) and ctx.executor.poll(f"deployment:{dep.id}/0") is None
    finally:
        _shut_down(sup, ctx, launched)


# A worker that only answers its health check (on the --port it is given), as `tuneforge serve` does.
HEALTHY_WORKER = (
    "import sys, http.server; port = int(sys.argv[sys.argv.index('--port') + 1]); "
    "ok = lambda h: (h.send_response(200), h.end_headers()); "
    "H = type('H', (http.server.BaseHTTPRequestHandler,), {'do_GET': ok, 'log_message': lambda *a: None}); "
    "http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()"
)


def test_a_replica_is_launched_adopted_and_stopped_through_the_executor(monkeypatch):
    """The executor is the one supervisor of processes: a replica is a service it launched (not counted
    against the jobs' limit); after a crash of the control plane a new executor's poll finds it again
    through the supervisor's reconcile; a clean stop ends it through the executor, which forgets it."""
    from tests.support.platformhelp import fake_model
    from tuneforge.jobs import executor
    from tuneforge.jobs.executor import LocalExecutor
    from tuneforge.platform import deployments as service
    from tuneforge.platform.app import build_platform

    monkeypatch.setattr(executor, "WORKER", [sys.executable, "-c", HEALTHY_WORKER])
    fake_model("tiny")
    ctx, _ = build_platform(executor=LocalExecutor(max_concurrent=1, gpu_count=0))
    sup, pids = ctx.deployments, []
    try:
        dep = service.create(ctx, "tiny", name="adopted")
        holder = f"deployment:{dep.id}/0"
        sup.tick()
        pids += [w["pid"] for w in sup.workers(dep.id)]
        assert ctx.executor.poll(holder).running  # launched by the executor, under the replica's name
        assert ctx.executor.can_start(0)  # a service: the one job slot is still free
        _wait(lambda: (sup.tick(), service.get(ctx, "adopted").state == "ready")[1], 30, "replica ready")
        assert "--- start on port" in sup.log_path(dep.id, 0).read_text()
        ctx.store.dispose()  # the control plane dies: its supervisors never stop, the worker runs on

        ctx, _ = build_platform(executor=LocalExecutor(max_concurrent=1, gpu_count=0))
        sup = ctx.deployments
        assert ctx.executor.poll(holder) is None  # a new executor knows nothing yet
        sup.reconcile()
        assert ctx.executor.poll(holder).running and [w["pid"] for w in sup.workers(dep.id)] == pids
        assert ctx.executor.can_start(0)
        sup.stop()  # a clean shutdown: the executor stops the adopted worker and forgets it
        assert not _alive(pids[0]) and ctx.executor.poll(holder) is None
    finally:
        _shut_down(sup, ctx, pids)


def test_replicas_use_the_executor_interface_only():
    """No second process supervisor: replicas.py starts, signals and reaps nothing itself and uses only
    what the Executor interface declares (a Ray executor implements the same)."""
    import ast
    import inspect

    from tuneforge.jobs.executor import Executor
    from tuneforge.platform import replicas

    tree = ast.parse(inspect.getsource(replicas))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"subprocess", "multiprocessing", "pty"}
    from_executor = {
        a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "tuneforge.jobs.executor"
        for a in n.names
    }
    assert from_executor <= {"Executor", "Handle", "Launch", "Status", "worker_argv"}, from_executor
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not {
        c for c in calls if c.startswith("os.") and c not in ("os.open", "os.fdopen", "os.environ.get")
    }
    used = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and ast.unparse(n.value) in ("self.ctx.executor", "executor", "self.executor")
    }
    assert used and used <= {m for m in dir(Executor) if not m.startswith("_")}, used - set(dir(Executor))


@pytest.mark.usefixtures("database_url")
def test_management_api_rows_and_events_on_both_databases():
    """The API's bookkeeping without workers (the supervisor is off), on SQLite and PostgreSQL."""
    from tests.support.platformhelp import fake_model, make_client

    fake_model("tiny")
    with make_client() as api:
        r = api.post("/api/v1/deployments", json={"model": "tiny", "replicas": 2})
        assert r.status_code == 201, r.text
        d = r.json()
        assert (d["name"], d["state"], d["replicas"], d["model_ids"]) == ("tiny", "starting", 2, ["tiny"])
        assert api.post("/api/v1/deployments", json={"model": "tiny", "name": "tiny"}).status_code == 409
        assert api.post("/api/v1/deployments", json={"model": "tiny"}).json()["name"] == "tiny-2"
        assert [x["name"] for x in api.get("/api/v1/deployments").json()["data"]] == ["tiny-2", "tiny"]
        assert api.delete("/api/v1/models/tiny").status_code == 409
        assert api.post("/api/v1/deployments/tiny/stop").json()["state"] == "stopped"
        assert api.post("/api/v1/deployments/tiny/start").json()["state"] == "starting"
        events = [e["event"] for e in api.get("/api/v1/deployments/tiny/events").json()["data"]]
        assert events == ["created", "starting", "stopped", "starting"]
        r = api.get("/api/v1/deployments/tiny/logs", params={"offset": 0})
        assert r.status_code == 200 and r.headers["X-Next-Offset"] == "0"
        assert api.delete("/api/v1/deployments/tiny").status_code == 204
        assert api.delete("/api/v1/deployments/tiny-2").status_code == 204
        assert api.get("/api/v1/deployments").json()["data"] == []
        assert api.delete("/api/v1/models/tiny").status_code == 200


def test_a_dora_fine_tune_deploys_merged_and_answers_as_trained(server, home):
    """peft cannot batch DoRA adapters with others: a DoRA fine-tune is served alone, merged into its
    base (exactly: the answers equal the unmerged adapter's through plain HF generate), the base is not
    listed beside it, and adding another adapter to it is refused up front."""
    from tuneforge.evaluate.generate import generate
    from tuneforge.models.inference import load_for_inference

    http = server.http()
    r = http.post("/api/v1/deployments", json={"model": "tiny-dora", "adapters": {"b": FT}})
    assert r.status_code == 422 and "DoRA" in r.json()["detail"]
    r = http.post("/api/v1/deployments", json={"model": "tiny-dora", "engine": "vllm"})
    assert r.status_code == 422 and "vLLM" in r.json()["detail"]
    # given as an adapter on its stored base, the merged fine-tune is still what answers by default
    r = http.post(
        "/api/v1/deployments", json={"model": "tiny-chat", "name": "dora-x", "adapters": {"x": "tiny-dora"}}
    )
    assert r.status_code == 201 and r.json()["default_model_id"] == "x" and r.json()["model_ids"] == ["x"]
    http.delete("/api/v1/deployments/dora-x")
    r = http.post("/api/v1/deployments", json={"model": "tiny-dora", "name": "dora"})
    assert r.status_code == 201, r.text
    try:
        dep = _ready(http, "dora")
        assert dep["model_ids"] == ["tiny-dora"]
        listed = [m["id"] for m in http.get("/v1/models").json()["data"] if m["deployment"] == "dora"]
        assert sorted(listed) == ["dora", "dora/tiny-dora", "tiny-dora"]
        answer = http.post(
            "/v1/chat/completions",
            json={"model": "dora", "messages": ASK, "max_tokens": 10, "temperature": 0},
        ).json()["choices"][0]["message"]["content"]
        adapter = home / "jobs" / "job-000000000003" / "final"
        lm = load_for_inference(home / "models" / "tiny-chat", adapter=adapter)
        assert answer == generate(lm, [ASK], max_new_tokens=10)[0]
        base = load_for_inference(home / "models" / "tiny-chat")
        assert answer != generate(base, [ASK], max_new_tokens=10)[0], "the adapter must change the answer"
    finally:
        http.delete("/api/v1/deployments/dora")


def test_scale_up_and_down_while_serving(server):
    """PATCH replicas: a second worker starts and joins the rotation, then the CLI
    scales back to one and waits: the extra worker's process is gone and the deployment still answers."""
    http = server.http()
    assert http.post("/api/v1/deployments", json={"model": "tiny-chat", "name": "scaled"}).status_code == 201
    try:
        _ready(http, "scaled")
        assert http.patch("/api/v1/deployments/scaled", json={"replicas": 0}).status_code == 422
        r = http.patch("/api/v1/deployments/scaled", json={"replicas": 2})
        assert r.status_code == 200 and r.json()["replicas"] == 2
        two = _wait(
            lambda: (d := _dep(http, "scaled"))["replicas_ready"] == 2 and d,
            what="2 replicas ready", http=http, name="scaled",
        )  # fmt: skip
        pids = sorted(w["pid"] for w in two["workers"])
        assert len(set(pids)) == 2
        for _ in range(4):  # round robin over both
            ask = {"model": "scaled", "messages": ASK, "max_tokens": 2, "temperature": 0}
            assert http.post("/v1/chat/completions", json=ask).status_code == 200
        out = server.cli("deployments", "scale", "scaled", "--replicas", "1", "--wait", timeout=120)
        assert "1/1 replicas ready" in out.stdout, out.stdout
        one = _dep(http, "scaled")
        assert one["replicas"] == 1 and [w["replica"] for w in one["workers"]] == [0]
        removed = [p for p in pids if p != one["workers"][0]["pid"]]
        assert len(removed) == 1 and _wait(lambda: not _alive(removed[0]), 30, "removed worker gone")
        ask = {"model": "scaled", "messages": ASK, "max_tokens": 2, "temperature": 0}
        assert http.post("/v1/chat/completions", json=ask).status_code == 200
        assert [e["message"] for e in _events(http, "scaled") if e["event"] == "scaled"][:1] == [
            "replicas 1 → 2"
        ]
    finally:
        http.delete("/api/v1/deployments/scaled")


def test_relay_of_a_broken_stream_ends_in_the_protocols_error_event():
    """What the gateway sends when the worker's stream breaks off in the middle of an event: the whole
    events before it, then one error event in the protocol's shape (OpenAI: an error object; Triton's
    generate_stream: an error string); the half-written event is dropped."""
    import asyncio

    from tuneforge.platform.routes import gateway

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b'data: {"a": 1}\n\ndata: {"b"'
            yield b': 2}\n\ndata: {"half'
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    class Dep:
        name = "d"

    async def relay(error_event):
        resp = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken())
        return b"".join([c async for c in gateway._relay_sse(resp, Dep(), error_event)])

    for error_event, check in (
        (gateway._openai_stream_error, lambda e: e["error"]["type"] == "server_error"),
        (gateway._v2_stream_error, lambda e: isinstance(e["error"], str)),
    ):
        events = asyncio.run(relay(error_event)).decode().split("\n\n")
        assert events[:2] == ['data: {"a": 1}', 'data: {"b": 2}'] and events[3:] == [""], events
        last = json.loads(events[2].removeprefix("data: "))
        assert check(last) and "stopped in the middle" in json.dumps(last), last


def test_a_deployment_token_reaches_its_own_deployment_when_another_serves_the_same_id():
    """Two deployments of one model both answer to its id; the token of the older one used to get a
    403 from the newer one, which ``_match`` preferred. The caller's own deployment wins."""
    from tests.support.platformhelp import fake_model, make_client

    fake_model("tiny")
    with make_client() as api:
        assert api.post("/api/v1/deployments", json={"model": "tiny", "name": "mine"}).status_code == 201
        assert api.post("/api/v1/deployments", json={"model": "tiny", "name": "other"}).status_code == 201
        token = api.post("/api/v1/tokens", json={"name": "t", "scope": "deployment:mine"}).json()["token"]
        mine = {"Authorization": f"Bearer {token}"}
        body = {"model": "tiny", "messages": ASK, "max_tokens": 2}
        r = api.post("/v1/chat/completions", json=body, headers=mine)
        # no worker runs here (no supervisor): "starting" is this deployment's own answer, not a 403
        assert r.status_code == 503 and "'mine'" in r.json()["error"]["message"], r.text
        r = api.post("/v2/models/tiny/generate", json={"text_input": "hi"}, headers=mine)
        assert r.status_code == 503 and "'mine'" in r.json()["error"], r.text
        r = api.post("/v1/chat/completions", json={**body, "model": "other"}, headers=mine)
        assert r.status_code == 403  # another deployment by its own name stays refused
