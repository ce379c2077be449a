"""Prometheus metrics: requests (count and latency by route), jobs by state, queue length."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from .db import Job

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class JobsCollector:
    """Read at scrape time from the database, so the figures are right after a restart too."""

    def __init__(self, ctx):
        self.ctx = ctx

    def collect(self):
        with self.ctx.store.reading() as s:
            counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        jobs = GaugeMetricFamily("tuneforge_jobs", "Jobs by state.", labels=["state"])
        for state in STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "tuneforge_queue_length", "Jobs waiting to start.", value=counts.get("queued", 0)
        )


class AnswerCacheCollector:
    """The job answers served from ``ctx.answers`` and made anew, and the memory it holds (job_answers)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def collect(self):
        cache = self.ctx.answers
        answers = CounterMetricFamily(
            "tuneforge_answer_cache_answers",
            "Job answers of lists and gets: from the cache (hit) or made anew (miss).",
            labels=["result"],
        )
        answers.add_metric(["hit"], cache.hits)
        answers.add_metric(["miss"], cache.misses)
        yield answers
        yield GaugeMetricFamily("tuneforge_answer_cache_bytes", "Memory the cache counts.", value=cache.bytes)


class RequestMetrics:
    def __init__(self, ctx):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneforge_http_requests", "HTTP requests.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tuneforge_http_request_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
        )
        # (method, route, status) → its counter and histogram series: as bounded as the label sets are
        self._series: dict[tuple[str, str, int], tuple] = {}
        self.registry.register(JobsCollector(ctx))
        self.registry.register(AnswerCacheCollector(ctx))

    def middleware(self, app):
        """ASGI middleware counting and timing each HTTP request (``app.add_middleware(ctx.metrics.
        middleware)``). Plain ASGI: Starlette's ``BaseHTTPMiddleware`` runs every request in a task of its
        own and passes the answer through a memory stream, about a tenth of a small request's CPU. The
        latency is to the answer's first byte (the status line), so a followed log does not count as one
        long request."""

        async def measure(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            start = time.perf_counter()
            answered = False

            def record(status: int) -> None:
                # The route's template, never the raw path: ids would make unbounded label sets.
                name = getattr(scope.get("route"), "path", "unmatched")
                key = (scope["method"], name, status)
                series = self._series.get(key)
                if series is None:  # labels() takes a lock and builds its key: once per label set
                    series = (
                        self.requests.labels(key[0], name, str(status)),
                        self.latency.labels(key[0], name),
                    )
                    self._series[key] = series
                series[0].inc()
                series[1].observe(time.perf_counter() - start)

            async def send_measured(message):
                nonlocal answered
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    record(message["status"])
                await send(message)

            try:
                await app(scope, receive, send_measured)
            finally:
                if not answered:  # an exception no handler turned into an answer: the server's 500
                    record(500)

        return measure


def render(ctx) -> tuple[bytes, str]:
    return generate_latest(ctx.metrics.registry), CONTENT_TYPE_LATEST
