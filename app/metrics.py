"""Prometheus metrics: requests and latency by route and status, suggestions served, review decisions.

One worker: each app has its own registry, so several apps in one process (tests) never collide.
Several workers (`notecoder serve --workers N`): `serve` points PROMETHEUS_MULTIPROC_DIR at an empty
folder before the workers start; prometheus_client then keeps every worker's values in files there and
`/metrics` on any worker reports the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def is_multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    def __init__(self) -> None:
        # `*_created` timestamps double the output and no dashboard uses them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "notecoder_http_requests", "HTTP requests answered", ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "notecoder_http_request_duration_seconds", "Time to answer an HTTP request", ("method", "route", "status"),
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.suggestions = Counter(
            "notecoder_suggestions_served", "Code suggestions returned", ("system",), registry=self.registry,
        )
        self.reviews = Counter(
            "notecoder_review_decisions", "Review decisions recorded", ("action",), registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        if is_multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
