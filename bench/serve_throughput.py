"""Serving throughput: concurrent streaming chat clients against `tuneforge serve` and, in the same
run, `transformers serve --continuous-batching` on the same model (the baseline).

    .venv/bin/python bench/serve_throughput.py [--levels 1,4,16,32] [--max-tokens 64]

Both servers run side by side; each level alternates them (--repeats times) so load changes on a
shared machine hit both, and the medians are compared. Each level starts N clients at once; each
streams greedy chat completions of fixed, varied prompts (several rounds at low N so every level
sends at least 4 requests). Prints output tokens/s (content
chunks received per wall second), p50/p99 time to first token, p50 inter-token latency, the
server's peak resident memory (VmHWM), and tuneforge/baseline ratios. Every server gets one warm-up
request first (transformers' paged cache is allocated on the first request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


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


async def run_level(url: str, model: str, clients: int, max_tokens: int, headers: dict) -> dict:
    rounds = max(1, 4 // clients)
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker(i: int):
            out = []
            for r in range(rounds):
                out.append(
                    await one_request(
                        client, model, PROMPTS[(i + r * clients) % len(PROMPTS)], max_tokens, headers
                    )
                )
            return out

        start = time.perf_counter()
        results = [x for batch in await asyncio.gather(*(worker(i) for i in range(clients))) for x in batch]
        wall = time.perf_counter() - start
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

    def run(self, clients: int, max_tokens: int) -> None:
        row = asyncio.run(run_level(self.url, self.model, clients, max_tokens, self.headers))
        self.runs.setdefault(clients, []).append(row)
        print(
            f"{self.name:>12} clients={clients:<3} tok/s={row['tok_s']:6.1f}  TTFT p50={row['ttft_p50']:.2f}s"
            f" p99={row['ttft_p99']:.2f}s  ITL p50={row['itl_p50'] * 1000:.0f}ms",
            flush=True,
        )

    def median(self, clients: int) -> dict:
        rows = self.runs[clients]
        return {k: statistics.median(r[k] for r in rows) for k in rows[0]}

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
    ap.add_argument("--levels", default="1,4,16,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--repeats", type=int, default=2, help="Alternating runs per level (medians).")
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
    args = ap.parse_args()
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
            ours_cmd + ["--max-batch-size", "32"],
            f"http://127.0.0.1:{args.port}",
            Path(args.model).name,
            "/v2/health/ready",
            {"Authorization": f"Bearer {key}"},
        )
    ]
    if not args.skip_baseline:
        base_port = args.port + 1
        base_cmd = [
            str(bin_dir / "transformers"),
            "serve",
            folder,
            "--continuous-batching",
            "--dtype",
            "float32",
        ]
        base_cmd += ["--host", "127.0.0.1", "--port", str(base_port)]
        if args.baseline_blocks:
            base_cmd += ["--cb-num-blocks", str(args.baseline_blocks)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.baseline_threads)} if args.baseline_threads else None
        servers.append(
            Server("transformers", base_cmd, f"http://127.0.0.1:{base_port}", folder, "/health", {}, env)
        )
    rss = {}
    try:
        for s in servers:
            s.start(args.max_tokens)
        # Both servers stay up; each level alternates them, so a change in the machine's load hits both.
        for n in levels:
            for _ in range(args.repeats):
                for s in servers:
                    s.run(n, args.max_tokens)
    finally:
        for s in servers:
            rss[s.name] = s.stop()
    ours, base = servers[0], servers[1] if len(servers) > 1 else None
    print(f"\nmedians of {args.repeats} alternating runs per level; peak RSS over the whole run")
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
            a, b = ours.median(n)["tok_s"], base.median(n)["tok_s"]
            print(f"serve_tok_s clients={n} tuneforge={a:.1f} baseline={b:.1f} ratio={a / b:.2f}")


if __name__ == "__main__":
    main()
