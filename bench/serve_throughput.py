"""Serving throughput under the issue's load: closed-loop staggered streaming chat clients against
`tuneforge serve` and, in the same run, `transformers serve --continuous-batching` on the same model
(the baseline).

    .venv/bin/python bench/serve_throughput.py [--levels 1,4,16,32] [--requests 32] [--repeats 3]
    .venv/bin/python bench/serve_throughput.py --quick   # a smoke run: levels 1 and 4, 4 requests, 1 run

The load, per level of N clients: ``--requests`` varied prompts (32 distinct ones), shared by N clients;
client i starts ``i * --stagger`` seconds after the first, and each client sends its next prompt as
soon as its previous answer finished (closed loop), so arrivals keep coming while other streams run.
Both servers run side by side; each level alternates them (--repeats times) so load changes on a
shared machine hit both, and the medians are compared. Prints the CPU model, the torch threads each
server decodes with (tuneforge: what its engine chose per batch size, from /metrics), output
tokens/s (content chunks received per wall second), p50/p99 time to first token, p50 inter-token
latency, each server's peak resident memory (VmHWM) and the tuneforge/baseline ratios. Every server
gets one warm-up request first (transformers' paged cache is allocated on the first request).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from dedup_check import cpu_model

PROMPTS = [
    "Give three tips for staying healthy.",
    "What is the capital of France? Answer in one sentence, then say why it matters.",
    "Write a short poem about the sea.",
    "Explain photosynthesis to a ten-year-old.",
    "List five fruits and their colours.",
    "How do I boil an egg?",
    "Describe a cat in three sentences.",
    "What are the benefits of reading books?",
    "Translate 'good morning' into French, Spanish and German.",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "Give me a recipe for a simple salad.",
    "What is machine learning?",
    "Suggest three names for a pet dog.",
    "How many days are in a leap year, and why?",
    "Write a polite email declining a meeting.",
    "Hi!",
    "Explain, step by step and with an example for each step, how a bill becomes a law in a parliamentary "
    "democracy, and say where it most often fails.",
    "What is 17 times 23?",
    "Compare trains and planes for a 500 km trip: cost, time, comfort and emissions.",
    "Write a haiku about autumn.",
    "My laptop will not turn on. What should I check first?",
    "Name the planets of the solar system in order from the sun.",
    "Write a Python function that reverses a string, and explain it.",
    "What is the difference between weather and climate?",
    "Give a two-sentence summary of the French Revolution.",
    "Plan a three-day trip to Rome for someone who loves history and food, with one museum a day and "
    "places to eat near each.",
    "What does a CPU do?",
    "Suggest a name for a bakery.",
    "How can I improve my sleep?",
    "Tell me a fun fact about octopuses.",
    "Why do we have leap seconds?",
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def closed_loop(
    clients: int, prompts: list[str], send: Callable[[str], Awaitable], stagger_s: float
) -> tuple[list, float]:
    """Send every prompt once through ``clients`` closed-loop clients: client i starts ``i * stagger_s``
    after the first and sends its next prompt (the next one nobody took yet) as soon as its previous
    answer finished. Returns the answers in prompt order and the wall seconds of the whole level."""
    todo = iter(enumerate(prompts))  # shared: each prompt goes to whichever client is free first
    results: list = [None] * len(prompts)

    async def client(i: int) -> None:
        await asyncio.sleep(i * stagger_s)
        for k, prompt in todo:
            results[k] = await send(prompt)

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return results, time.perf_counter() - start


def level_prompts(requests: int) -> list[str]:
    return list(itertools.islice(itertools.cycle(PROMPTS), requests))


async def one_request(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, headers: dict):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    stamps = []
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError("no tokens received")
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:], strict=False)], len(stamps)


async def run_level(
    url: str, model: str, clients: int, requests: int, max_tokens: int, headers: dict, stagger_s: float
) -> dict:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def send(prompt: str):
            return await one_request(client, model, prompt, max_tokens, headers)

        results, wall = await closed_loop(clients, level_prompts(requests), send, stagger_s)
    ttft = [r[0] for r in results]
    itl = [g for r in results for g in r[1]]
    tokens = sum(r[2] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "tok_s": tokens / wall,
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p99": pct(ttft, 0.99),
        "itl_p50": statistics.median(itl) if itl else float("nan"),
    }


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


class Server:
    """One server process under test."""

    def __init__(self, name, cmd, url, model, ready_path, headers, env=None):
        self.name, self.cmd, self.url, self.model = name, cmd, url, model
        self.ready_path, self.headers, self.env = ready_path, headers, env
        self.proc: subprocess.Popen | None = None
        self.runs: dict[int, list[dict]] = {}

    def start(self, max_tokens: int) -> None:
        print(f"== {self.name}: {' '.join(self.cmd)}", flush=True)
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        wait_ready(self.url, self.proc, self.ready_path)
        asyncio.run(one_request_standalone(self.url, self.model, max_tokens, self.headers))  # warm-up
        print(f"   ready and warm after {time.perf_counter() - started:.1f}s", flush=True)

    def run(self, clients: int, requests: int, max_tokens: int, stagger_s: float) -> None:
        row = asyncio.run(
            run_level(self.url, self.model, clients, requests, max_tokens, self.headers, stagger_s)
        )
        self.runs.setdefault(clients, []).append(row)
        print(
            f"{self.name:>12} clients={clients:<3} tok/s={row['tok_s']:6.1f}  TTFT p50={row['ttft_p50']:.2f}s"
            f" p99={row['ttft_p99']:.2f}s  ITL p50={row['itl_p50'] * 1000:.0f}ms",
            flush=True,
        )

    def median(self, clients: int) -> dict:
        rows = self.runs[clients]
        return {k: statistics.median(r[k] for r in rows) for k in rows[0]}

    def engine_threads(self) -> str:
        """The threads and weight layout tuneforge's engine chose, per forward size (its /metrics)."""
        try:
            text = httpx.get(self.url + "/metrics", headers=self.headers, timeout=10).text
        except httpx.HTTPError as exc:
            return f"? ({exc})"
        found = [
            line.removeprefix("tuneforge_engine_").replace("packed_weights", "packed")
            for line in text.splitlines()
            if line.startswith(("tuneforge_engine_threads{", "tuneforge_engine_packed_weights{"))
        ]
        return ", ".join(found) or "? (no tuneforge_engine_threads in /metrics)"

    def stop(self) -> float:
        rss = peak_rss_mb(self.proc.pid) if self.proc else float("nan")
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return rss


async def one_request_standalone(url, model, max_tokens, headers):
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one_request(client, model, PROMPTS[0], max_tokens, headers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="A stored model name or folder.")
    ap.add_argument("--levels", default="1,4,16,32", help="Client counts, comma-separated.")
    ap.add_argument("--requests", type=int, default=32, help="Requests per level (varied prompts).")
    ap.add_argument("--stagger", type=float, default=0.1, help="Seconds between two clients' starts.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--repeats", type=int, default=3, help="Alternating runs per level (medians).")
    ap.add_argument(
        "--quick", action="store_true", help="Smoke run: 4 requests, 1 repeat, levels 1,4 unless given."
    )
    ap.add_argument(
        "--baseline-threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS for transformers serve (default: torch's choice). On cores shared with other "
        "busy processes 1 is far faster for it; tuneforge picks its thread count by measuring.",
    )
    ap.add_argument(
        "--baseline-blocks",
        type=int,
        default=0,
        help="--cb-num-blocks for transformers serve (0: its default, 60%% of RAM). 256 pages of 256 tokens "
        "hold the 32 x 2048 tokens tuneforge may hold.",
    )
    ap.add_argument("--dtype", default="float32", help="Both servers' dtype (float32 | bfloat16).")
    ap.add_argument(
        "--tf-arg",
        action="append",
        default=[],
        help="More `tuneforge serve` options, e.g. --tf-arg=--prefix-cache-tokens=0.",
    )
    ap.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="tuneforge's --quantize only (int8 linear layers); the baseline stays transformers in --dtype.",
    )
    args = ap.parse_args()
    if args.quick:
        args.requests, args.repeats = 4, 1
        args.levels = "1,4" if args.levels == ap.get_default("levels") else args.levels
    levels = [int(x) for x in args.levels.split(",")]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tuneforge.models.store import resolve_model

    folder = str(resolve_model(args.model))
    bin_dir = Path(sys.executable).parent
    key = "bench-key"
    ours_cmd = [str(bin_dir / "tuneforge"), "serve", args.model, "--port", str(args.port), "--api-key", key]
    servers = [
        Server(
            "tuneforge",
            ours_cmd
            + ["--max-batch-size", "32", "--dtype", args.dtype, "--quantize", args.quantize, *args.tf_arg],
            f"http://127.0.0.1:{args.port}",
            Path(args.model).name,
            "/v2/health/ready",
            {"Authorization": f"Bearer {key}"},
        )
    ]
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    base_threads = str(args.baseline_threads) if args.baseline_threads else f"torch default ({allowed} CPUs)"
    if not args.skip_baseline:
        base_port = args.port + 1
        base_cmd = [
            str(bin_dir / "transformers"),
            "serve",
            folder,
            "--continuous-batching",
            "--dtype",
            args.dtype,
        ]
        base_cmd += ["--host", "127.0.0.1", "--port", str(base_port)]
        if args.baseline_blocks:
            base_cmd += ["--cb-num-blocks", str(args.baseline_blocks)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.baseline_threads)} if args.baseline_threads else None
        servers.append(
            Server("transformers", base_cmd, f"http://127.0.0.1:{base_port}", folder, "/health", {}, env)
        )
    print(f"CPU: {cpu_model()} ({allowed} CPUs allowed); load average {os.getloadavg()[0]:.2f}", flush=True)
    rss, threads = {}, "?"
    try:
        for s in servers:
            s.start(args.max_tokens)
        # Both servers stay up; each level alternates them, so a change in the machine's load hits both.
        for n in levels:
            for _ in range(args.repeats):
                for s in servers:
                    s.run(n, args.requests, args.max_tokens, args.stagger)
        threads = servers[0].engine_threads()
    finally:
        for s in servers:
            rss[s.name] = s.stop()
    ours, base = servers[0], servers[1] if len(servers) > 1 else None
    print(
        f"\nCPU: {cpu_model()}; load average at the end {os.getloadavg()[0]:.2f}\n"
        f"load per level: {args.requests} requests, closed loop, clients started {args.stagger}s apart, "
        f"{args.max_tokens} greedy tokens, {args.dtype}; tuneforge --quantize {args.quantize}\n"
        f"threads: tuneforge {threads}; transformers {base_threads}\n"
        f"medians of {args.repeats} alternating runs per level; peak RSS over the whole run"
    )
    print(
        "| clients | tuneforge tok/s | transformers tok/s | ratio | TTFT p50/p99 (tf) "
        "| TTFT p50/p99 (hf) | ITL p50 tf/hf |"
    )
    print("|---|---|---|---|---|---|---|")
    nan = float("nan")
    for n in levels:
        a = ours.median(n)
        b = base.median(n) if base else {k: nan for k in a}
        ratio = f"{a['tok_s'] / b['tok_s']:.2f}" if base else "-"
        print(
            f"| {n} | {a['tok_s']:.1f} | {b['tok_s']:.1f} | {ratio} | "
            f"{a['ttft_p50']:.2f}/{a['ttft_p99']:.2f} s | {b['ttft_p50']:.2f}/{b['ttft_p99']:.2f} s | "
            f"{a['itl_p50'] * 1000:.0f}/{b['itl_p50'] * 1000:.0f} ms |"
        )
    print(
        f"peak RSS: tuneforge {rss['tuneforge']:.0f} MB, transformers {rss.get('transformers', nan):.0f} MB"
    )
    if base:
        for n in levels:
            a, b = ours.median(n), base.median(n)
            print(
                f"serve_tok_s clients={n} tuneforge={a['tok_s']:.1f} baseline={b['tok_s']:.1f} "
                f"ratio={a['tok_s'] / b['tok_s']:.2f} ttft_p99_ratio={a['ttft_p99'] / b['ttft_p99']:.2f}"
            )


if __name__ == "__main__":
    main()
