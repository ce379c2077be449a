"""What one hostile request must not do to the others on a worker: a near-zero temperature or a failing
row of the sampler ends that request alone; a huge legal chat is refused by its characters before it is
rendered, and rendering runs off the event loop, so health probes and other clients are answered."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.support.servehelp import start_server, stream_chat

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BASE = "tiny-chat"
ASK = [{"role": "user", "content": "Give three tips for staying healthy."}]


@pytest.fixture(scope="module")
def server(serving_models):
    with start_server(serving_models, max_batch_size=8, max_queue=64) as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_sampling_options_are_bounded_and_a_near_zero_temperature_is_greedy():
    from tuneforge.serve.engine.base import BadRequest
    from tuneforge.serve.params import SamplingOptions, sampling_params

    def params(**body):
        return sampling_params(SamplingOptions.parse(body), 2048, 10, 16)

    assert params(temperature=1e-40).temperature == 0.0 and params(temperature=1e-40).greedy
    assert params(temperature=1e-6).greedy
    assert params(temperature=1e-3).temperature == 0.01  # vLLM's floor for a tiny positive temperature
    assert params(temperature=0.7).temperature == 0.7
    refused = {
        "temperature": [-1, 2.5, "nan", float("inf"), [1]],
        "top_p": [0, 1.5],
        "top_k": [-2, 1 << 21, 1.5],
        "frequency_penalty": [3],
        "presence_penalty": [-3],
        "repetition_penalty": [0, 11],
        "max_tokens": [0, 2**40],
        "seed": [2**64, "x"],
        "logprobs": [21, -1],
        "stop": [["a"] * 9, ["x" * 257], 5],
        "stop_token_ids": [list(range(65)), [-1], [2**40], [True], "1"],
    }
    for key, values in refused.items():
        for value in values:
            with pytest.raises(BadRequest) as err:
                params(**{key: value})
            assert err.value.param == key, (key, value)


def test_a_refused_option_is_not_echoed_whole():
    """KServe/Triton options may come as strings: an 8 MiB one was echoed whole in the 400."""
    from tuneforge.serve.engine.base import BadRequest
    from tuneforge.serve.params import SamplingOptions, sampling_params

    with pytest.raises(BadRequest) as err:
        sampling_params(SamplingOptions.parse({"top_k": "9" * 1_000_000}), 2048, 10, 16)
    assert len(str(err.value)) < 200 and "1,000,000 characters" in str(err.value)


def test_a_near_zero_temperature_answers_greedily(client):
    """1e-40 used to divide the logits into inf, and torch.multinomial raised inside the engine step."""

    def ask(t):
        r = client.chat.completions.create(model=BASE, messages=ASK, max_tokens=10, temperature=t)
        return r.choices[0].message.content

    assert ask(1e-40) == ask(0)


def _stream(client, out: dict, key, **extra):
    stream_chat(client, out, key, BASE, ASK, **extra)


def test_a_failing_sequence_fails_alone_and_the_batch_keeps_streaming(server, client, monkeypatch):
    """A request whose sampling raises (here: a sampler that fails on top_k=7) gets its own error: a
    500 in OpenAI's shape; the requests decoding in the same batch finish their answers."""
    from tuneforge.serve.engine import sampling

    original = sampling._filter

    def failing(row, top_k, top_p):
        if top_k == 7:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return original(row, top_k, top_p)

    monkeypatch.setattr(sampling, "_filter", failing)
    out: dict = {}
    healthy = [threading.Thread(target=_stream, args=(client, out, i)) for i in range(3)]
    for t in healthy:
        t.start()
    deadline = time.monotonic() + 60
    while not all(("started", i) in out for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.state.engine.stats().running >= 1  # the poison joins a running batch
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(
            model=BASE, messages=ASK, max_tokens=5, temperature=0.8, extra_body={"top_k": 7}
        )
    for t in healthy:
        t.join(120)
    for i in range(3):
        assert isinstance(out[i], tuple), out[i]
        assert out[i][1] == "length" and out[i][0], out[i]
    assert err.value.status_code == 500 and "sampling failed" in err.value.body["message"]
    # streamed: the failing request's stream ends in an error event the openai SDK raises on
    _stream(client, out, "poison", extra_body={"top_k": 7})
    assert isinstance(out["poison"], openai.APIError) and "sampling failed" in str(out["poison"])


LEGAL_CHAT = [
    {"role": ("user", "assistant")[i % 2], "content": chr(ord("a") + i % 26) * 65_000} for i in range(120)
]


def _probe_while(server, busy: threading.Thread) -> list[float]:
    """Seconds each /health probe took while ``busy`` runs (at least one probe)."""
    took = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while busy.is_alive() or not took:
            start = time.monotonic()
            assert http.get("/health").status_code == 200
            took.append(time.monotonic() - start)
            time.sleep(0.05)
    return took


def test_a_huge_legal_chat_is_refused_by_its_characters_while_others_are_served(server, client):
    """7.3 MiB: 120 messages of 65,000 characters, each one under the per-message bound. Refused with a
    400 naming the limit, before any rendering; health probes and a small request go on meanwhile."""
    answers = {}

    def big():
        body = {"model": BASE, "messages": LEGAL_CHAT, "max_tokens": 4}
        answers["big"] = httpx.post(server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=120)

    started = time.monotonic()
    t = threading.Thread(target=big)
    t.start()
    small = client.chat.completions.create(model=BASE, messages=ASK, max_tokens=4, temperature=0)
    took = _probe_while(server, t)
    t.join()
    r = answers["big"]
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    limit = server.state.max_model_len * 32
    assert "7800" in message and f"{limit} characters" in message, message
    assert small.choices[0].finish_reason in ("stop", "length")
    assert max(took) < 2.0, took
    print(f"huge chat refused in {time.monotonic() - started:.2f}s; slowest probe {max(took):.3f}s")


def test_rendering_and_tokenizing_run_off_the_event_loop(server, client, monkeypatch):
    """A prompt that fits but takes long to render (here a template that takes 2 s) leaves the worker's
    event loop free: health probes answer at once during it."""
    tokenizer = server.state.served.variants[BASE].tokenizer
    original = tokenizer.apply_chat_template

    def slow(*args, **kwargs):
        time.sleep(2.0)
        return original(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "apply_chat_template", slow)
    answers = {}
    t = threading.Thread(
        target=lambda: answers.update(
            r=client.chat.completions.create(model=BASE, messages=ASK, max_tokens=2, temperature=0)
        )
    )
    t.start()
    time.sleep(0.2)  # the request is rendering now
    took = _probe_while(server, t)
    t.join()
    assert answers["r"].choices[0].message.content is not None
    assert len(took) >= 5 and max(took) < 0.5, took


def test_a_kserve_shape_of_many_huge_dimensions_is_refused_at_once():
    """The element count stops at the bound: multiplied out, 10,000 dimensions of 10**99 (a 1 MB body)
    took half a minute on the event loop, and a full 8 MiB body of them half an hour."""
    from tuneforge.serve.engine.base import BadRequest
    from tuneforge.serve.kserve import InferRequest, read_inputs

    def inputs(tensor):
        return read_inputs(InferRequest.parse({"inputs": [tensor]}), b"")

    tensor = {"name": "text_input", "datatype": "BYTES", "data": ["x"], "shape": [10**99] * 10_000}
    started = time.monotonic()
    with pytest.raises(BadRequest, match="at most 64 elements"):
        inputs(tensor)
    assert time.monotonic() - started < 1.0
    assert inputs({**tensor, "shape": [10**99, 0], "data": []})["text_input"][2] == []
