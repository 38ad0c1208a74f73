"""Prometheus metrics of the service (`GET /metrics`, text format).

Requests, errors and latency by endpoint (the route's path template) and status (`RequestMetrics`),
reloads, the served versions, events accepted and refused, experiment assignments.

With several worker processes (`recsys serve --workers N`) each process writes its samples to
files in `PROMETHEUS_MULTIPROC_DIR` (the serve command makes a fresh one) and a scrape of any
worker sums the counters and histograms of all of them; the served-version gauge is reported per
live worker (`pid` label). The variable must be set before `prometheus_client` is first imported.
"""

from __future__ import annotations

import os
import time
from typing import Any

from litestar import Controller, MediaType, Response, get
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "recsys"
# Responses take milliseconds; the default buckets (5 ms .. 10 s) would put them all in one.
LATENCY_BUCKETS: list[str | float] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]

REQUESTS = Counter(f"{PREFIX}_requests", "Requests by method, route and status", ["method", "path", "status_code"])
REQUEST_ERRORS = Counter(
    f"{PREFIX}_requests_error", "Requests answered 5xx, by method, route and status", ["method", "path", "status_code"]
)
LATENCY = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by method and route",
    ["method", "path"],
    buckets=LATENCY_BUCKETS,
)


class RequestMetrics(ASGIMiddleware):
    """Counts and times every routed request by its route template (`/recommend/places`, never the
    raw path, so a scan of random URLs adds no series). Lean on purpose: a request is a couple of
    milliseconds, and Litestar's own Prometheus middleware built a Request object and looked its
    labels up on every call."""

    scopes = (ScopeType.HTTP,)
    exclude_path_pattern = ("^/metrics$",)

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status, recorded = 500, False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            key = (str(scope.get("method", "")), str(scope.get("path_template", "unrouted")), status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = (REQUESTS.labels(key[0], key[1], str(status)), LATENCY.labels(*key[:2]))
            series[0].inc()
            series[1].observe(time.perf_counter() - started)
            if status >= 500:
                REQUEST_ERRORS.labels(key[0], key[1], str(status)).inc()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Counted before the last byte leaves: a client that has its answer finds it counted
                # by the next scrape, whichever worker answers that.
                record()
            await send(message)

        try:
            await next_app(scope, receive, sending)
        finally:
            record()  # a request that failed before its response ended


RELOADS = Counter(
    f"{PREFIX}_reloads", "Manifest loads by arm and outcome (ok: swapped in; failed: kept serving)", ["arm", "outcome"]
)
SERVED_VERSION = Gauge(
    f"{PREFIX}_served_version",
    "1 for the manifest version each worker serves in each arm (live, candidate)",
    ["arm", "version", "model_version"],
    multiprocess_mode="liveall",
)
EVENTS = Counter(
    f"{PREFIX}_events",
    "Feedback events by outcome: accepted (on disk), rejected (invalid batch), throttled (429), failed (disk error)",
    ["outcome"],
)
EVENTS_BY_TYPE = Counter(f"{PREFIX}_events_accepted_by_type", "Accepted feedback events by type", ["type"])
ASSIGNMENTS = Counter(
    f"{PREFIX}_assignments", "Recommendation requests by the experiment arm that served them", ["arm"]
)


class MetricsController(Controller):
    path = "/metrics"
    tags = ["operations"]

    @get(sync_to_thread=False, media_type=MediaType.TEXT, summary="Prometheus metrics (text format), of all workers")
    def metrics(self) -> Response[bytes]:
        registry = REGISTRY
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def record_version(arm: str, old: tuple[str, str] | None, new: tuple[str, str] | None) -> None:
    """The served-version gauge after a swap: (version, model_version) pairs."""
    if old is not None:
        SERVED_VERSION.labels(arm, *old).set(0)
    if new is not None:
        SERVED_VERSION.labels(arm, *new).set(1)


def worker_exited() -> None:
    """Drop this process's live gauges from the shared directory (multi-worker mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        prometheus_multiprocess.mark_process_dead(os.getpid())
