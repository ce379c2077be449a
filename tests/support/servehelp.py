"""A real uvicorn server on 127.0.0.1 in a background thread, for the serving tests."""

from __future__ import annotations

import threading
import time

from tuneforge.jobs.ranks import free_port


class ServerThread:
    def __init__(self, state, api_key: str | None):
        import uvicorn

        from tuneforge.serve.app import create_app

        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(state, api_key), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.state.engine.start()
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.state.engine.stop()


def start_server(models: dict, api_key: str | None = "test-key", **config):
    from tuneforge.serve.worker import WorkerConfig, build_state

    adapters = {k: str(v) for k, v in models.items() if k != "base"}
    config.setdefault("device", "cpu")  # exact-output comparisons against the CPU float32 HF path
    state = build_state(WorkerConfig(str(models["base"]), adapters, engine="transformers", **config))
    return ServerThread(state, api_key)


def stream_chat(client, out: dict, key, model: str, messages, max_tokens: int = 40, **extra) -> None:
    """One streaming chat through the ``openai`` client (``ignore_eos``: every answer runs to its
    ``max_tokens``); ``out[("started", key)]`` once a chunk arrived, ``out[key]`` the (text,
    finish_reason) or the exception it raised. Run in threads to keep a batch decoding."""
    try:
        stream = client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, stream=True, temperature=0.8,
            extra_body={"ignore_eos": True, **extra.pop("extra_body", {})}, **extra,
        )  # fmt: skip
        text, finish = "", None
        for chunk in stream:
            out.setdefault(("started", key), True)
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        out[key] = (text, finish)
    except Exception as exc:  # the test reads it
        out[key] = exc
