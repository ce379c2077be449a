"""Prometheus metrics of one serving worker (its own registry, so several apps in one process —
tests — never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneforge_requests",
            "HTTP inference requests by protocol route and status.",
            ["route", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tuneforge_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "tuneforge_generation_tokens", "Tokens generated.", ["model"], registry=r
        )
        self.finished = Counter(
            "tuneforge_request_finished", "Generations finished, by reason.", ["model", "reason"], registry=r
        )
        self.ttft = Histogram(
            "tuneforge_time_to_first_token_seconds",
            "From admission request to first token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "tuneforge_inter_token_latency_seconds",
            "Between two tokens of one request.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("tuneforge_queue_depth", "Requests waiting for a batch slot.", registry=r)
        self.running = Gauge("tuneforge_running_batch_size", "Requests in the running batch.", registry=r)
        self.kv_used = Gauge("tuneforge_kv_cache_used_tokens", "Tokens held in the KV cache.", registry=r)
        self.kv_capacity = Gauge("tuneforge_kv_cache_capacity_tokens", "KV cache size in tokens.", registry=r)
        self.kv_usage = Gauge("tuneforge_kv_cache_usage_ratio", "KV cache use, 0 to 1.", registry=r)
        self.engine_threads = Gauge(
            "tuneforge_engine_threads",
            "CPU threads the engine measured fastest for forwards of this many rows (a power of 2).",
            ["rows"],
            registry=r,
        )
        self.prefix_hits = Counter(
            "tuneforge_prefix_cache_hits",
            "Requests whose prompt prefix K/V came from the prefix cache.",
            ["model"],
            registry=r,
        )
        self.prefix_hit_tokens = Counter(
            "tuneforge_prefix_cache_hit_tokens",
            "Prompt tokens not prefilled: prefix cache hits.",
            ["model"],
            registry=r,
        )
        self.engine_packed = Gauge(
            "tuneforge_engine_packed_weights",
            "1 where oneDNN-packed weights were measured faster than MKL's for this many rows.",
            ["rows"],
            registry=r,
        )

    # -- engine hooks (called from the engine thread; prometheus_client is thread-safe) -----------
    def observe_first_token(self, model: str, seconds: float) -> None:
        self.ttft.labels(model).observe(seconds)

    def observe_inter_token(self, model: str, seconds: float) -> None:
        self.itl.labels(model).observe(seconds)

    def observe_finished(self, model: str, prompt: int, completion: int, reason: str) -> None:
        self.prompt_tokens.labels(model).inc(prompt)
        self.generation_tokens.labels(model).inc(completion)
        self.finished.labels(model, reason).inc()

    def set_load(self, stats) -> None:
        self.queue_depth.set(stats.waiting)
        self.running.set(stats.running)
        self.kv_used.set(stats.kv_used_tokens)
        self.kv_capacity.set(stats.kv_capacity_tokens)
        self.kv_usage.set(stats.kv_used_tokens / max(1, stats.kv_capacity_tokens))

    def set_step_setting(self, bucket: int, threads: int, packed: bool) -> None:
        self.engine_threads.labels(str(bucket)).set(threads)
        self.engine_packed.labels(str(bucket)).set(int(packed))

    def observe_prefix_hit(self, model: str, tokens: int) -> None:
        self.prefix_hits.labels(model).inc()
        self.prefix_hit_tokens.labels(model).inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
