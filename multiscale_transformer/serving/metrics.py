"""Opt-in Prometheus metrics (`axl serve --metrics`): GET /metrics in the text exposition format.

Requests by route and status, their latency (until the last byte of the response, streams
included), completions in progress and queued, and bytes generated, from prometheus-client. Each
app has its own registry, so several servers in one process (the tests) do not collide. Every label
comes from a closed set, so that no caller (one without the API key included) can grow /metrics:
routes by their template (unknown paths as "unmatched"), methods among HTTP's (any other as "other"),
statuses as the three digits the server answered with.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multiscale_transformer.serving.middleware import HTTPMiddleware

if TYPE_CHECKING:
    from fastapi import FastAPI

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, app: FastAPI) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "axl_requests", "HTTP requests answered", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "axl_request_duration_seconds",
            "seconds from a request's arrival to the end of its response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.generated = Counter("axl_generated_bytes", "bytes generated for completions", registry=registry)
        for name, doc, key in (
            ("axl_active_completions", "completions decoding in a batch row", "active"),
            ("axl_queue_depth", "completions waiting for a batch row", "queued"),
        ):
            Gauge(name, doc, registry=registry).set_function(lambda key=key: _engine_stat(app, key))

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _engine_stat(app: FastAPI, key: str) -> float:
    engine = app.state.engine
    return float(engine.stats()[key]) if engine is not None else 0.0


def count_generated(request: Request, n_bytes: int) -> None:
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.generated.inc(n_bytes)


async def metrics_endpoint(request: Request) -> Response:
    return request.app.state.metrics.render()


class MetricsMiddleware(HTTPMiddleware):
    """Counts every HTTP request and times it to its response's last body message."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500  # an exception before the response started

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
