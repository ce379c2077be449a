"""`tuneforge serve` (the serving worker) and `tuneforge chat` (a streaming terminal chat)."""

from __future__ import annotations

import asyncio
import sys

import typer
from rich.live import Live
from rich.table import Table

from tuneforge.errors import ConfigError

from .common import console, err_console, stage_progress


def _adapters(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {item!r}: write it as NAME=PATH (a LoRA adapter folder).")
        if name in out:
            raise ConfigError(f"--adapter {name} is given twice.")
        out[name] = path
    return out


def serve(
    model: str = typer.Argument(
        ..., help="A stored model name, an HF folder, a merged export or a job's final/."
    ),
    adapter: list[str] = typer.Option(
        None,
        "--adapter",
        help="NAME=PATH: a LoRA adapter on the same base, served as model id NAME (repeat).",
    ),
    name: str = typer.Option(None, "--name", help="Model id for MODEL (default: its name or job folder)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 exposes it)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    api_key: str = typer.Option(
        None, "--api-key", envvar="TUNEFORGE_SERVE_API_KEY", help="Require 'Authorization: Bearer KEY'."
    ),
    engine: str = typer.Option("auto", "--engine", help="auto | transformers | vllm."),
    max_batch_size: int = typer.Option(
        32, "--max-batch-size", min=1, max=1024, help="Requests decoded together."
    ),
    max_model_len: int = typer.Option(
        2048, "--max-model-len", min=16, help="Prompt + answer tokens, at most."
    ),
    max_queue: int = typer.Option(
        256, "--max-queue", min=0, help="Waiting requests beyond the batch (503 above)."
    ),
    max_prefill_tokens: int = typer.Option(
        128,
        "--max-prefill-tokens",
        min=16,
        help="Prompt tokens prefilled between two decode steps at least (up to 8x more when few requests "
        "decode or many wait); longer prompts are prefilled in chunks.",
    ),
    prefix_cache_tokens: int = typer.Option(
        1024,
        "--prefix-cache-tokens",
        min=0,
        help="K/V of shared prompt prefixes (a system prompt) kept for reuse, in tokens; 0: off.",
    ),
    max_tokens: int = typer.Option(512, "--default-max-tokens", min=1, help="Answer length when not asked."),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads for the engine (default: all allowed)."
    ),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="auto | float32 | bfloat16 | float16. auto: bf16 on CUDA, float32 on a CPU (bf16 there is "
        "faster on AVX512-BF16/AMX chips, but answers then vary with the batch they share).",
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (a GPU when there is one) | cpu | cuda | cuda:N."
    ),
    quantize: str = typer.Option(
        "none",
        "--quantize",
        help="none | int8: int8 linear layers on a CPU (a quarter of fp32's weight traffic, answers still "
        "independent of the batch; its quality check: bench/serve_dtype_check.py --quantize int8).",
    ),
):
    """Serve a model (and LoRA adapters on it) over OpenAI, KServe v2 and Triton generate routes."""
    from tuneforge.serve.worker import WorkerConfig, build_state, run

    config = WorkerConfig(
        model=model,
        adapters=_adapters(adapter or []),
        name=name,
        engine=engine,
        max_batch_size=max_batch_size,
        max_model_len=max_model_len,
        max_queue=max_queue,
        max_prefill_tokens=max_prefill_tokens,
        prefix_cache_tokens=prefix_cache_tokens,
        default_max_tokens=max_tokens,
        threads=threads,
        dtype=dtype,
        device=device,
        quantize=quantize,
    )
    with stage_progress(sys.stderr.isatty()) as progress:
        state = build_state(config, progress)
    ids = ", ".join(state.served.variants)

    def ready(url: str) -> None:
        # One parseable line on stdout: supervisors may wait for it or poll /v2/health/ready.
        weights = next(state.served.model.parameters()).dtype if state.served.model is not None else None
        dtype_part = f" dtype={str(weights).removeprefix('torch.')}" if weights is not None else ""
        quant_part = f" quantize={quantize}" if quantize != "none" else ""
        line = f"ready {url} engine={state.engine.name}{dtype_part}{quant_part} models={ids}"
        console.print(line, highlight=False, soft_wrap=True)
        err_console.print(
            f"try: curl {url}/v1/chat/completions -H 'Content-Type: application/json'"
            + (" -H 'Authorization: Bearer $KEY'" if api_key else "")
            + f' -d \'{{"model": "{state.served.base_id}", "messages": [{{"role": "user", '
            '"content": "Hello"}]}\'',
            highlight=False,
            soft_wrap=True,
        )
        sys.stdout.flush()

    run(state, host, port, api_key, on_ready=ready)


def chat(
    target: str = typer.Argument(
        ...,
        help="A deployment on the server (TUNEFORGE_URL), a local model (name, folder, job final/) or a URL.",
    ),
    compare: str = typer.Option(None, "--compare", help="A second model or URL; answers side by side."),
    model: str = typer.Option(None, "--model", help="Model id at a URL (default: the first it lists)."),
    api_key: str = typer.Option(None, "--api-key", envvar="TUNEFORGE_TOKEN", help="Bearer token for URLs."),
    system: str = typer.Option(None, "--system", help="A system message."),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="Ask this (repeat) and exit."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=2.0),
):
    """Chat in the terminal, streaming; --compare asks two models the same questions."""
    targets = [_open(target, model, api_key)]
    if compare:
        targets.append(_open(compare, model if compare.startswith("http") else None, api_key))
    options = {"max_tokens": max_tokens, "temperature": temperature}
    asyncio.run(_chat_loop(targets, system, list(prompt or []), options))


def _open(target: str, model: str | None, api_key: str | None):
    """A URL; a deployment (or a model id in one) on the server; else a local model."""
    from tuneforge.serve.chat import RemoteChat, is_url, open_target

    if not is_url(target):
        found = _deployment(target, api_key)
        if found:
            return RemoteChat(found[0], target, found[1])
    return open_target(target, model, api_key)


def _deployment(name: str, api_key: str | None) -> tuple[str, str | None] | None:
    """(gateway URL, token) when the server at TUNEFORGE_URL lists NAME in its /v1/models."""
    import os
    from pathlib import Path

    import httpx

    from .client import DEFAULT_URL, _token

    if Path(name).expanduser().exists():
        return None
    url = (os.environ.get("TUNEFORGE_URL") or DEFAULT_URL).rstrip("/")
    token = api_key or _token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.get(f"{url}/v1/models", headers=headers, timeout=3)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    ids = {m.get("id") for m in r.json().get("data") or []}
    return (url, token) if name in ids else None


async def _chat_loop(targets, system: str | None, prompts: list[str], options: dict) -> None:
    histories: list[list[dict]] = [[{"role": "system", "content": system}] if system else [] for _ in targets]
    try:
        for t in targets:
            await t.open()
        one_shot = bool(prompts)
        if not one_shot:
            err_console.print("chatting with " + " | ".join(t.label for t in targets) + " (Ctrl-D to quit)")
        while True:
            if one_shot:
                if not prompts:
                    return
                question = prompts.pop(0)
                console.print(f"[bold]you>[/] {question}", highlight=False)
            else:
                try:
                    question = await asyncio.to_thread(console.input, "[bold]you>[/] ")
                except EOFError:
                    return
            if not question.strip():
                continue
            for h in histories:
                h.append({"role": "user", "content": question})
            if len(targets) == 1:
                answers = await _one(targets[0], histories[0], options)
            else:
                answers = await _side_by_side(targets, histories, options)
            for h, a in zip(histories, answers, strict=True):
                h.append({"role": "assistant", "content": a})
    finally:
        for t in targets:
            await t.close()


async def _one(target, history, options) -> list[str]:
    parts = []
    console.print(f"[bold cyan]{target.label}>[/] ", end="", highlight=False)
    async for text in target.stream(history, options):
        parts.append(text)
        console.print(text, end="", highlight=False, markup=False)
    console.print()
    return ["".join(parts)]


async def _side_by_side(targets, histories, options) -> list[str]:
    answers = ["" for _ in targets]

    def table() -> Table:
        t = Table(expand=True, show_lines=False)
        for target in targets:
            t.add_column(target.label, ratio=1, overflow="fold")
        t.add_row(*answers)
        return t

    async def pump(i):
        async for text in targets[i].stream(histories[i], options):
            answers[i] += text

    with Live(table(), console=console, refresh_per_second=8) as live:
        tasks = [asyncio.create_task(pump(i)) for i in range(len(targets))]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.1)
            live.update(table())
        for t in tasks:
            t.result()
        live.update(table())
    return answers
