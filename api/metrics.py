"""``/metrics`` (Prometheus) and the per-request instrumentation behind it.

Two kinds of numbers are served:

- This process's own: requests by operation and status, request duration, sync-wait time
  (``worker.results.metrics.SYNC_WAIT``). With ``herald api --workers N`` the processes share them
  through prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which
  ``herald api`` sets up when N > 1), so any process's scrape shows the sum.
- The fleet's: deliveries, attempts, retries, provider latency, queue depth, in-flight
  sends, read from the result table and the broker by ``worker.results.metrics.FleetCollector``.

``/metrics`` is unsigned unless ``HERALD_METRICS_OPEN=false``; then it takes SigV4 like the
Pinpoint routes (any valid key). Every request also leaves one structured log event.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import ACCESS_KEY_SCOPE, authenticated
from worker.results.metrics import FleetCollector

log = structlog.get_logger("herald.api")

REQUESTS = Counter(
    "herald_http_requests",
    "API requests by operation (route name) and HTTP status",
    ["operation", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "herald_http_request_duration_seconds",
    "API request duration by operation (SendUsersMessages includes its sync wait)",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
# Unsigned service routes are polled by probes and scrapers: count them, log them at debug.
QUIET_OPERATIONS = frozenset({"healthz", "readyz", "metrics", "dashboard_static"})


class _Union(Collector):
    def __init__(self, *collectors: Any) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def _process_metrics() -> Any:
    """This process's metrics, or every API process's when they share a multiprocess dir."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def _client(scope: Scope) -> str | None:
    # uvicorn puts the peer here, or the forwarded client when the peer is a trusted proxy
    # (--forwarded-allow-ips).
    client = scope.get("client")
    return str(client[0]) if client else None


def _operation(scope: Scope) -> str:
    route = scope.get("route")
    name = getattr(route, "name", None)
    if name:
        return str(name)
    return "options" if scope.get("method") == "OPTIONS" else "unmatched"


class RequestMetrics:
    """Pure ASGI middleware: counts and times every request, logs one event per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        headers: dict[str, str] = {}

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() in (b"x-amzn-requestid", b"x-amzn-errortype"):
                        headers[name.decode().lower()] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            elapsed = time.perf_counter() - began
            operation = _operation(scope)
            REQUESTS.labels(operation, scope.get("method", ""), str(status)).inc()
            REQUEST_SECONDS.labels(operation).observe(elapsed)
            emit = log.debug if operation in QUIET_OPERATIONS else log.info
            emit(
                "request",
                operation=operation,
                method=scope.get("method"),
                path=scope.get("path"),
                status=status,
                error_type=headers.get("x-amzn-errortype"),
                amzn_request_id=headers.get("x-amzn-requestid"),
                app_id=(scope.get("path_params") or {}).get("app_id"),
                access_key_id=scope.get(ACCESS_KEY_SCOPE),
                client=_client(scope),
                duration_ms=round(elapsed * 1000, 1),
            )


def install(app: FastAPI) -> None:
    """Add ``/metrics`` and the request instrumentation; call last in ``create_app`` so the
    middleware sees every request, OPTIONS answers included."""
    herald = app.state.herald
    settings = herald.settings
    fleet = FleetCollector(
        herald.sessions,
        broker_url=settings.broker_url,
        cache_s=settings.metrics_cache_s,
    )
    exposition = _Union(_process_metrics(), fleet)
    app.state.fleet_metrics = fleet

    @app.get("/metrics", name="metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not settings.metrics_open:
            await authenticated(request)
        body = await run_in_threadpool(generate_latest, exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    app.add_middleware(RequestMetrics)
