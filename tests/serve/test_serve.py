"""The serving worker through the clients people use: openai, tritonclient, kserve, curl, httpx."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import subprocess
import threading
import time

import httpx
import pytest
import torch

from tests.support.servehelp import start_server

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BASE = "tiny-chat"
KSERVE_SEED = {
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
TRITON_SEED = {
    "text_input": "hello",
    "stream": False,
    "sampling_parameters": '{"temperature": 0.7, "top_p": 0.95, "max_tokens": 1024}',
}


@pytest.fixture(scope="module")
def server(serving_models):
    with start_server(serving_models, max_batch_size=8, max_queue=64) as s:
        yield s


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def chat_greedy(client, model: str, content: str, max_tokens: int = 12) -> str:
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0
    )
    return r.choices[0].message.content


# -- OpenAI ----------------------------------------------------------------------------------------
def test_openai_models_chat_completion_and_usage(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {BASE, "alpha", "beta"}
    assert models["alpha"].parent == BASE and models[BASE].parent is None

    r = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "Say hi"}], max_tokens=6, temperature=0
    )
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")

    c = client.completions.create(
        model=BASE, prompt="The quick brown", max_tokens=5, temperature=0, logprobs=2
    )
    assert c.object == "text_completion" and c.usage.completion_tokens == 5
    assert len(c.choices[0].logprobs.token_logprobs) == 5
    assert all(lp <= 0 for lp in c.choices[0].logprobs.token_logprobs)
    # the same request twice, greedy: the same answer
    again = client.completions.create(model=BASE, prompt="The quick brown", max_tokens=5, temperature=0)
    assert again.choices[0].text == c.choices[0].text


def test_openai_streaming_with_usage_equals_non_streaming(client):
    stream = client.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert text == chat_greedy(client, "alpha", "What is the capital of France?", 10)


def test_openai_unknown_model_bad_key_and_bad_request(server, client):
    import openai

    with pytest.raises(openai.NotFoundError) as exc:
        chat_greedy(client, "no-such-model", "hi")
    assert exc.value.body["param"] == "model" and "served models" in exc.value.body["message"]
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": "x"}], temperature=5)
    assert exc.value.body["param"] == "temperature"
    # no key at all on the v2 routes; health stays open for supervisors and probes
    assert httpx.post(server.url + f"/v2/models/{BASE}/infer", json=KSERVE_SEED).status_code == 401
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_adapters_in_one_batch_each_equal_their_own_model_alone(server, client, serving_models):
    """Base, alpha and beta asked at once (one batch, mixed adapters) answer exactly as each model
    loaded on its own by the plain HF generate path."""
    from tuneforge.evaluate.generate import generate
    from tuneforge.models.inference import load_for_inference

    question = [{"role": "user", "content": "Give three tips"}]
    expected = {}
    for name in (BASE, "alpha", "beta"):
        adapter = None if name == BASE else serving_models[name]
        lm = load_for_inference(serving_models["base"], adapter=adapter)
        expected[name] = generate(lm, [question], max_new_tokens=10)[0]
    assert len(set(expected.values())) == 3, (
        "the adapters must change the answers for this test to mean anything"
    )

    results: dict[str, str] = {}

    def ask(name):
        results[name] = chat_greedy(client, name, "Give three tips", 10).strip()

    peak_before = server.state.engine.peak_running
    server.state.engine.peak_running = 0
    threads = [threading.Thread(target=ask, args=(n,)) for n in (BASE, "alpha", "beta") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.state.engine.peak_running >= 2, "the requests were not batched together"
    server.state.engine.peak_running = max(peak_before, server.state.engine.peak_running)
    # the server decodes with oneDNN-packed weights; the expected answers came from plain nn.Linear
    assert server.state.engine.packed_layers > 0
    assert results == expected


def test_packed_linear_layers_compute_what_plain_ones_do(serving_models):
    """A mixed-adapter batch through the packed model: same logits (float32, summation order aside)
    and the same greedy tokens as the unpacked model; every linear layer, LoRA's included, packed."""
    import torch
    from torch import nn

    from tuneforge.models.inference import load_for_serving
    from tuneforge.serve.engine.packed_linear import PackedLinear, pack_linears

    adapters = {k: str(v) for k, v in serving_models.items() if k != "base"}
    model = load_for_serving(serving_models["base"], adapters).model
    linears = sum(1 for m in model.modules() if type(m) is nn.Linear)
    torch.manual_seed(0)
    ids = torch.randint(3, 100, (3, 9))
    names = ["__base__", "alpha", "beta"]
    with torch.inference_mode():
        plain = model(input_ids=ids, adapter_names=names).logits
        assert pack_linears(model, rows_hint=4) == linears > 0
        assert sum(1 for m in model.modules() if isinstance(m, PackedLinear)) == linears
        packed = model(input_ids=ids, adapter_names=names).logits
    assert torch.allclose(packed, plain, atol=1e-5, rtol=1e-5), (packed - plain).abs().max()
    assert torch.equal(packed.argmax(-1), plain.argmax(-1))
    assert not torch.allclose(plain[0], plain[1], atol=1e-3), "the adapters must change the logits"


def test_greedy_batched_equals_alone(client):
    prompts = ["Give three tips", "What is the capital of France? The capital", "0123456789", "今天天气很好"]
    alone = [
        client.completions.create(model=BASE, prompt=p, max_tokens=12, temperature=0).choices[0].text
        for p in prompts
    ]
    together = client.completions.create(model=BASE, prompt=prompts, max_tokens=12, temperature=0)
    assert [c.text for c in sorted(together.choices, key=lambda c: c.index)] == alone


def test_32_concurrent_streaming_clients_all_complete(server):
    from openai import AsyncOpenAI

    async def main():
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)

        async def one(i):
            stream = await client.chat.completions.create(
                model=(BASE, "alpha", "beta")[i % 3],
                messages=[{"role": "user", "content": f"Count to {i}"}],
                max_tokens=8 + i % 5,
                temperature=0.8,
                seed=i,
                stream=True,
                stream_options={"include_usage": True},
            )
            finish, usage, pieces = None, None, 0
            async for chunk in stream:
                if chunk.choices:
                    finish = chunk.choices[0].finish_reason or finish
                    pieces += 1
                if chunk.usage:
                    usage = chunk.usage
            return finish, usage

        return await asyncio.gather(*(one(i) for i in range(32)))

    results = asyncio.run(main())
    assert len(results) == 32
    assert all(f in ("stop", "length") and u is not None and u.completion_tokens >= 1 for f, u in results)


# -- KServe v2 / Triton ----------------------------------------------------------------------------
def test_tritonclient_live_ready_and_infer_binary_and_json(server, client):
    import numpy as np
    import tritonclient.http as tc

    # tritonclient writes its own headers into the dict it is given: give it copies
    triton = tc.InferenceServerClient(server.url.removeprefix("http://"))
    assert triton.is_server_live(headers=AUTH) and triton.is_server_ready(headers=AUTH)
    assert triton.is_model_ready(BASE, headers=AUTH) and triton.is_model_ready("beta", headers=AUTH)
    assert triton.get_model_metadata(BASE, headers=AUTH)["outputs"][0]["datatype"] == "BYTES"
    want = chat_greedy(client, "beta", "Give three tips", 8)
    for binary in (True, False):
        inp = tc.InferInput("text_input", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b"Give three tips"], dtype=object), binary_data=binary)
        out = tc.InferRequestedOutput("text_output", binary_data=binary)
        result = triton.infer(
            "beta", [inp], outputs=[out], headers=dict(AUTH), parameters={"max_tokens": 8, "temperature": 0}
        )
        got = result.as_numpy("text_output")[0]  # bytes from binary data, str from JSON
        assert (got.decode() if isinstance(got, bytes) else got) == want, f"binary={binary}"


def test_kserve_rest_client_v2(server, client):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def main():
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        inp = InferInput(name="prompt", shape=[2], datatype="BYTES", data=["Give three tips", "0123456789"])
        request = InferRequest(
            model_name="alpha", infer_inputs=[inp], request_id="r-1", parameters={"max_tokens": 6}
        )
        request.parameters["temperature"] = 0
        return await rest.infer(server.url, request, model_name="alpha", headers=dict(AUTH))

    response = asyncio.run(main())
    assert response.id == "r-1" and response.model_name == "alpha"
    texts = response.outputs[0].data
    assert texts == [chat_greedy(client, "alpha", p, 6) for p in ("Give three tips", "0123456789")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_with_the_two_seed_bodies(server, tmp_path):
    def curl(path, body):
        (tmp_path / "input.json").write_text(json.dumps(body))
        out = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {KEY}",
             "-H", "Content-Type: application/json", "--data-binary", f"@{tmp_path / 'input.json'}",
             server.url + path],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        body, status = out.stdout.rsplit("\n", 1)
        return int(status), json.loads(body)

    status, r = curl(f"/v2/models/{BASE}/infer", KSERVE_SEED)
    assert status == 200 and r["id"] == KSERVE_SEED["id"] and r["model_name"] == BASE
    assert r["outputs"][0]["datatype"] == "BYTES" and r["outputs"][0]["shape"] == [1]
    assert isinstance(r["outputs"][0]["data"][0], str)
    status, r = curl(f"/v2/models/{BASE}/generate", TRITON_SEED)
    assert status == 200 and r["model_name"] == BASE and r["model_version"] == "1"
    assert isinstance(r["text_output"], str) and r["completion_tokens"] <= 1024


def test_plain_prompts_use_the_chat_template_unless_raw(server):
    from tuneforge.models.load import load_tokenizer

    tok = load_tokenizer(server.state.served.base_folder)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=False
    )
    templated = len(tok(text, add_special_tokens=False)["input_ids"])
    raw = len(tok("hello", add_special_tokens=False)["input_ids"])
    assert templated > raw
    for params, expected in (({"max_tokens": 2}, templated), ({"max_tokens": 2, "raw": True}, raw)):
        body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
        r = httpx.post(
            server.url + f"/v2/models/{BASE}/infer", json={**body, "parameters": params}, headers=AUTH
        )
        assert r.status_code == 200 and r.json()["parameters"]["prompt_tokens"] == expected


def test_generate_stream_events(server):
    body = {"text_input": "hello", "parameters": {"max_tokens": 6, "temperature": 0}}
    with httpx.stream(
        "POST", server.url + f"/v2/models/{BASE}/generate_stream", json=body, headers=AUTH
    ) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and events[-1]["finish_reason"] in ("stop", "length")
    whole = httpx.post(server.url + f"/v2/models/{BASE}/generate", json=body, headers=AUTH).json()
    assert "".join(e["text_output"] for e in events) == whole["text_output"]


def test_metrics_report_tokens_latency_and_load(server, client):
    chat_greedy(client, BASE, "hi", 3)
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    for name in (
        "tuneforge_requests_total",
        "tuneforge_prompt_tokens_total",
        "tuneforge_generation_tokens_total",
        "tuneforge_time_to_first_token_seconds_count",
        "tuneforge_inter_token_latency_seconds_count",
        "tuneforge_queue_depth",
        "tuneforge_running_batch_size",
        "tuneforge_kv_cache_usage_ratio",
        "tuneforge_engine_threads",  # what the step tuner chose (bench/serve_throughput.py prints it)
    ):
        assert name in text, name
    assert 'tuneforge_requests_total{route="/v1/chat/completions",status="200"}' in text


def test_worker_publishes_its_request_types_in_an_openapi_document(server):
    """GET /openapi.json (behind the key, as every route but health) describes each route's body by the
    type the route validates it with; a bound the document states is the bound the route enforces."""
    assert httpx.get(server.url + "/openapi.json").status_code == 401
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH).json()
    schemas = doc["components"]["schemas"]

    def body(path: str) -> dict:
        content = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        return schemas[content["schema"]["$ref"].removeprefix("#/components/schemas/")]

    chat = body("/v1/chat/completions")
    fields = "model messages max_tokens max_completion_tokens temperature top_p top_k stop n stream seed"
    assert {*fields.split(), "stream_options", "logprobs", "top_logprobs"} <= set(chat["properties"])
    assert chat["required"] == ["messages"] and chat["properties"]["temperature"]["maximum"] == 2.0
    assert {"prompt", "max_tokens", "logprobs", "echo"} <= set(body("/v1/completions")["properties"])
    assert body("/v2/models/{name}/infer")["required"] == ["inputs"]
    generate = body("/v2/models/{name}/generate")
    assert {"text_input", "parameters", "sampling_parameters", "max_tokens"} <= set(generate["properties"])
    assert body("/v2/models/{name}/generate_stream") == generate
    refs = {r.removeprefix("#/components/schemas/") for r in _refs(doc)}
    assert refs and refs <= set(schemas), refs - set(schemas)

    from tuneforge.serve.engine.base import BadRequest
    from tuneforge.serve.openai_protocol import ChatCompletionRequest

    ask, bounded = {"model": BASE, "messages": [{"role": "user", "content": "x"}]}, set()
    for field, spec in chat["properties"].items():
        for s in [spec, *spec.get("anyOf", [])]:
            outside = [s["minimum"] - 1] if "minimum" in s else []
            outside += [s["maximum"] + 1] if "maximum" in s else []
            for over in outside:
                with pytest.raises(BadRequest) as err:
                    ChatCompletionRequest.parse({**ask, field: over})
                assert err.value.param == field, (field, over, err.value)
                bounded.add(field)
    assert {"max_tokens", "temperature", "top_p", "top_k", "seed", "n", "top_logprobs"} <= bounded, bounded
    r = httpx.post(server.url + "/v1/chat/completions", json={**ask, "top_p": 1.5}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_p", r.text


def _refs(value) -> list[str]:
    if isinstance(value, dict):
        return [value["$ref"]] if "$ref" in value else [r for v in value.values() for r in _refs(v)]
    return [r for v in value for r in _refs(v)] if isinstance(value, list) else []


# -- hostile input ---------------------------------------------------------------------------------
def _binary_request(header: dict, tail: bytes, declared: int | None = None):
    head = json.dumps(header).encode()
    n = len(head) if declared is None else declared
    return head + tail, {
        **AUTH,
        "Inference-Header-Content-Length": str(n),
        "Content-Type": "application/octet-stream",
    }


@pytest.mark.parametrize(
    "path,kind,body",
    [
        (
            "/v1/chat/completions",
            "json",
            {"model": BASE, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9},
        ),
        (
            "/v1/chat/completions",
            "json",
            {"model": BASE, "messages": [{"role": "user", "content": "x" * 200_000}]},
        ),
        ("/v1/chat/completions", "json", {"model": BASE, "messages": "hello"}),
        (
            "/v1/chat/completions",
            "json",
            {"model": BASE, "messages": [{"role": "user", "content": "x"}], "n": 1000},
        ),
        (
            "/v1/chat/completions",
            "json",
            {"model": BASE, "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 100},
        ),
        (
            "/v1/chat/completions",
            "json",
            {"model": BASE, "messages": [{"role": "user", "content": "x"}], "top_p": "abc"},
        ),
        ("/v1/completions", "json", {"model": BASE, "prompt": [10**9]}),
        ("/v1/completions", "json", {"model": BASE, "prompt": {"a": 1}}),
        ("/v1/completions", "raw", b"{not json"),
        (
            "/v2/models/tiny-chat/infer",
            "json",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]},
        ),
        (
            "/v2/models/tiny-chat/infer",
            "json",
            {"inputs": [{"name": "x", "shape": [3], "datatype": "BYTES", "data": ["a"]}]},
        ),
        (
            "/v2/models/tiny-chat/infer",
            "json",
            {"inputs": [{"name": "x", "shape": [10**12], "datatype": "BYTES", "data": ["a"]}]},
        ),
        (
            "/v2/models/tiny-chat/infer",
            "json",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [5]}]},
        ),
        ("/v2/models/tiny-chat/infer", "json", {"inputs": "nope"}),
        ("/v2/models/tiny-chat/generate", "json", {"text_input": "hi", "sampling_parameters": "{bad json"}),
        (
            "/v2/models/tiny-chat/generate",
            "json",
            {"text_input": "hi", "sampling_parameters": '{"max_tokens": 99999999}'},
        ),
        ("/v2/models/tiny-chat/generate", "json", {"text_input": ["not", "a", "string"]}),
        # JSON inside the JSON: bounded like the body (these were RecursionError 500s)
        ("/v2/models/tiny-chat/generate", "json", {"text_input": "hi", "sampling_parameters": "[" * 100_000}),
        (
            "/v2/models/tiny-chat/generate_stream",
            "json",
            {"text_input": "hi", "sampling_parameters": '{"a":' * 50_000 + "1" + "}" * 50_000},
        ),
        (
            "/v2/models/tiny-chat/generate",
            "json",
            {"text_input": "hi", "sampling_parameters": '{"seed": ' + "9" * 5000 + "}"},
        ),
        ("/v2/models/tiny-chat/generate", "raw", b'{"text_input": "hi", "sampling_parameters": "\\ud800"}'),
        (
            "/v2/models/tiny-chat/generate_stream",
            "json",
            {"text_input": "hi", "parameters": {"temperature": -1}},
        ),
    ],
)
def test_hostile_requests_get_400_not_500(server, path, kind, body):
    if kind == "raw":
        r = httpx.post(server.url + path, content=body, headers=AUTH)
    else:
        r = httpx.post(server.url + path, json=body, headers=AUTH, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["message"] if isinstance(err, dict) else err) and "Traceback" not in r.text


def test_malformed_binary_tensors_get_400(server):
    url = server.url + f"/v2/models/{BASE}/infer"
    good_elem = struct.pack("<I", 5) + b"hello"
    header = {
        "inputs": [
            {
                "name": "text_input",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(good_elem)},
            }
        ]
    }
    cases = [
        _binary_request(header, good_elem, declared=10**6),  # header length past the body
        _binary_request(header, good_elem, declared=3),  # header cut inside the JSON
        _binary_request(header, struct.pack("<I", 10**9) + b"hello"),  # element longer than the data
        _binary_request(header, good_elem[:3] + b"\x00\x00"),  # length prefix cut short
        _binary_request(
            header, struct.pack("<I", 2) + b"\xff\xfe" + b"\x00" * 5
        ),  # not UTF-8 / leftover bytes
        _binary_request(header, good_elem + b"extra"),  # bytes no input claims
    ]
    bad_header = {**AUTH, "Inference-Header-Content-Length": "abc"}
    cases.append((json.dumps(header).encode() + good_elem, bad_header))
    for body, headers in cases:
        r = httpx.post(url, content=body, headers=headers)
        assert r.status_code == 400, r.text
        assert isinstance(r.json()["error"], str)
    body, headers = _binary_request(header, good_elem)
    r = httpx.post(url, content=body, headers=headers, json=None)
    assert r.status_code == 200
    assert len(httpx.post(url, content=b"x" * (9 << 20), headers=AUTH).content) and (
        httpx.post(url, content=b"x" * (9 << 20), headers=AUTH).status_code == 413
    )


# -- the queue bound and disconnects ----------------------------------------------------------------
def test_a_stuck_engine_thread_makes_the_worker_not_ready(server, monkeypatch):
    """What the deployment supervisor's liveness probe reads: /v2/health/ready turns 503 while the
    engine thread makes no progress (here: a decode step that blocks), and 200 again once it moves."""
    from tuneforge.serve.engine import transformers_engine

    engine = server.state.engine
    go, original = threading.Event(), engine._decode_step

    def blocked_step():
        go.wait(20)
        original()

    # Well above the idle loop's 0.5 s beat: at 0.5 s a loaded machine made the first probe 503 at times.
    monkeypatch.setattr(transformers_engine, "STALL_S", 2.0)
    monkeypatch.setattr(engine, "_decode_step", blocked_step)
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        assert http.get("/v2/health/ready").status_code == 200
        body = {"model": BASE, "prompt": "hi", "max_tokens": 4, "ignore_eos": True}
        answer = {}
        ask = threading.Thread(target=lambda: answer.update(r=http.post("/v1/completions", json=body)))
        ask.start()
        try:
            deadline = time.monotonic() + 10
            while http.get("/v2/health/ready").status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert http.get("/v2/health/ready").status_code == 503
            assert http.get("/v2/health/live").status_code == 200  # the process itself answers
        finally:
            go.set()
        ask.join(30)
        assert answer["r"].status_code == 200
        assert http.get("/v2/health/ready").status_code == 200


def test_a_slow_forward_still_beats_and_stays_ready(server, monkeypatch):
    """A long prefill of a big model is not a stuck engine: each decoder layer beats. Here every layer
    takes 0.3 s against a stall limit of 0.5 s; whole steps take longer than the limit, yet every
    readiness probe during the request answers 200."""
    from tuneforge.serve.engine import transformers_engine

    engine = server.state.engine
    layers = next(
        m
        for m in engine.model.modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) == engine.model.config.num_hidden_layers
    )
    assert len(layers) >= 2
    handles = [layer.register_forward_pre_hook(lambda *_: time.sleep(0.3)) for layer in layers]
    monkeypatch.setattr(transformers_engine, "STALL_S", 0.5)
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
            body = {"model": BASE, "prompt": "hi", "max_tokens": 3, "ignore_eos": True}
            answer = {}
            ask = threading.Thread(target=lambda: answer.update(r=http.post("/v1/completions", json=body)))
            ask.start()
            codes = []
            while ask.is_alive():
                codes.append(http.get("/v2/health/ready").status_code)
                time.sleep(0.05)
            assert answer["r"].status_code == 200
            assert len(codes) > 10 and set(codes) == {200}, codes
    finally:
        for h in handles:
            h.remove()


def test_full_queue_answers_503_and_recovers_and_a_disconnect_frees_its_slot(serving_models):
    with start_server(serving_models, max_batch_size=1, max_queue=1) as s:
        engine = s.state.engine
        long = {"model": BASE, "prompt": "x", "max_tokens": 1500, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=s.url, headers=AUTH, timeout=60) as http:
            with http.stream("POST", "/v1/completions", json=long) as first:
                lines = first.iter_lines()
                next(line for line in lines if line.startswith("data: "))  # running now
                queued = threading.Thread(
                    target=http.post,
                    args=("/v1/completions",),
                    kwargs={"json": {**long, "stream": False, "max_tokens": 4}},
                )
                queued.start()
                deadline = time.time() + 10
                while engine.stats().waiting < 1 and time.time() < deadline:
                    time.sleep(0.01)
                r = http.post("/v1/completions", json={"model": BASE, "prompt": "y", "max_tokens": 2})
                assert r.status_code == 503 and r.json()["error"]["type"] == "ServiceUnavailableError"
            # the first client left after one chunk of 1500 tokens: its row must free at once
            queued.join(timeout=20)
            assert not queued.is_alive()
            deadline = time.time() + 5
            while engine.stats().running and time.time() < deadline:
                time.sleep(0.01)
            assert engine.stats().running == 0 and engine.stats().waiting == 0
            r = http.post("/v1/completions", json={"model": BASE, "prompt": "y", "max_tokens": 2})
            assert r.status_code == 200


def test_cli_serve_prints_ready_and_checks_the_key(serving_models, tmp_path):
    import os
    import sys

    from tests.support.servehelp import free_port

    port = free_port()
    env = {**os.environ, "TUNEFORGE_SERVE_API_KEY": "k-env"}
    base, alpha = str(serving_models["base"]), f"alpha={serving_models['alpha']}"
    cmd = [sys.executable, "-m", "tuneforge.cli.main", "serve", base, "--port", str(port), "--adapter", alpha]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"ready http://127.0.0.1:{port} ") and "models=tiny-chat, alpha" in line
        assert " engine=transformers dtype=float32 " in line
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/v2/health/ready").json() == {"ready": True}
        assert httpx.get(url + "/v1/models").status_code == 401
        r = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer k-env"})
        assert [m["id"] for m in r.json()["data"]] == ["tiny-chat", "alpha"]
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=20) in (0, -15)


def test_cli_chat_against_a_url_and_compare(server):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    runner = CliRunner()
    want = chat_greedy_http(server, "alpha", "hello", 5)
    r = runner.invoke(
        app, ["chat", server.url, "--model", "alpha", "--api-key", KEY, "-p", "hello", "--max-tokens", "5"]
    )
    assert r.exit_code == 0, r.output
    assert want.strip() in r.output
    r = runner.invoke(
        app,
        [
            "chat",
            server.url,
            "--model",
            "alpha",
            "--compare",
            server.url,
            "--api-key",
            KEY,
            "-p",
            "hi",
            "--max-tokens",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output


def chat_greedy_http(server, model, content, max_tokens):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=AUTH).json()["choices"][0][
        "message"
    ]["content"]


@pytest.mark.gpu
def test_vllm_engine_answers_like_transformers(serving_models):
    pytest.importorskip("vllm")
    from tests.support.servehelp import ServerThread
    from tuneforge.serve.worker import WorkerConfig, build_state

    models = {k: str(v) for k, v in serving_models.items() if k != "base"}
    state = build_state(WorkerConfig(str(serving_models["base"]), models, engine="vllm"))
    assert state.engine.name == "vllm"
    with ServerThread(state, KEY) as server:
        from openai import OpenAI

        client = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        assert {m.id for m in client.models.list().data} == {BASE, "alpha", "beta"}
        for model in (BASE, "alpha"):
            r = client.completions.create(model=model, prompt="The quick brown", max_tokens=5, temperature=0)
            assert r.usage.completion_tokens >= 1


def test_step_tuner_calibrates_each_batch_size_at_once_and_follows_a_change():
    """Threads and weight layout are measured per batch bucket in its first steps (not at step 16 and
    then every few hundred): MKL wins at one row and packed weights at 16 here, both on 2 threads;
    on busy cores (2 threads 15x slower) a bucket pays at most one slow step per 2-thread candidate.
    Prefills (by prompt tokens) calibrate buckets of their own: interleaved with decode steps of the same
    size, they must not decide the decode steps' setting."""
    import torch

    from tuneforge.serve.engine.threads import MAX_INTERVAL, ThreadTuner

    before = torch.get_num_threads()
    layout = {"packed": None}
    try:
        tuner = ThreadTuner([1, 2], (True, False), lambda packed: layout.update(packed=packed))

        def run(steps: int, batch: int, cost, prefill: bool = False) -> int:
            slow = 0
            for _ in range(steps):
                tuner.before_step(batch, prefill)
                threads = torch.get_num_threads()
                slow += threads == 2
                tuner.after_step(batch, batch * cost(threads, layout["packed"], batch), prefill)
            return slow

        idle = lambda t, packed, batch: (0.06 if t == 1 else 0.04) * (1.2 if packed == (batch == 1) else 1)  # noqa: E731
        # a prefill's cost per token: a tenth of a decode row's on 1 thread, plain weights
        prompt = lambda t, packed, tokens: 0.004 if (t, packed) == (1, False) else 0.005  # noqa: E731
        run(8, 1, idle)  # 2 threads x 2 layouts x 2 rounds
        for _ in range(8):
            run(1, 16, prompt, prefill=True)
            run(1, 16, idle)
        assert tuner.choices() == {1: (2, False), 16: (2, True)}
        assert tuner.choices(prefill=True) == {16: (1, False)}
        busy = lambda t, packed, batch: 0.1 if t == 1 else 1.8  # noqa: E731
        tuner = ThreadTuner([1, 2], (True, False), lambda packed: layout.update(packed=packed))
        assert run(3000, 1, busy) <= 2 + 3000 // 256 and tuner.choices()[1].threads == 1
        assert run(2 * MAX_INTERVAL, 1, idle) and tuner.choices()[1] == (2, False), "the load went away"
    finally:
        torch.set_num_threads(before)


def test_cli_chat_with_a_local_model_matches_the_server(server, serving_models):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    want = chat_greedy_http(server, BASE, "hello", 4)
    r = CliRunner().invoke(app, ["chat", str(serving_models["base"]), "-p", "hello", "--max-tokens", "4"])
    assert r.exit_code == 0, r.output
    assert want.strip() in r.output


def test_n_choices_and_seeded_sampling_repeat(client):
    kwargs = dict(model=BASE, messages=[{"role": "user", "content": "Count"}], max_tokens=8, temperature=1.0)
    r = client.chat.completions.create(n=3, seed=7, **kwargs)
    assert [c.index for c in r.choices] == [0, 1, 2] and r.usage.completion_tokens >= 3
    assert len({c.message.content for c in r.choices}) > 1, "n choices with one seed must still differ"
    again = client.chat.completions.create(n=1, seed=7, **kwargs)
    assert again.choices[0].message.content == r.choices[0].message.content


def test_bfloat16_serving_casts_base_and_adapters_and_answers(serving_models):
    """``--dtype bfloat16``: base and LoRA weights in bf16 (no fp32 adapter cast per step), no packing
    (oneDNN packing is for float32), and a mixed-adapter batch still answers; a bad dtype is refused."""
    import torch

    from tuneforge.errors import ConfigError
    from tuneforge.serve.engine.base import SamplingParams
    from tuneforge.serve.worker import WorkerConfig, build_state

    adapters = {k: str(v) for k, v in serving_models.items() if k != "base"}
    state = build_state(WorkerConfig(str(serving_models["base"]), adapters, dtype="bfloat16"))
    assert {p.dtype for p in state.served.model.parameters()} == {torch.bfloat16}
    assert state.engine.packed_layers == 0

    async def ask_all():
        state.engine.start()
        tok = state.served.variants[BASE].tokenizer
        ids = tok("Give three tips")["input_ids"]
        params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
        streams = [state.engine.submit(v, ids, params) for v in (BASE, "alpha", "beta")]
        return [[d async for d in s] for s in streams]

    try:
        answers = asyncio.run(ask_all())
    finally:
        state.engine.stop()
    for deltas in answers:
        assert sum(len(d.token_ids) for d in deltas) == 6 and deltas[-1].finish_reason == "length"
    with pytest.raises(ConfigError, match="choose one of auto, float32"):
        build_state(WorkerConfig(str(serving_models["base"]), dtype="fp8"))
