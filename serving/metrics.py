"""Prometheus metrics of the service (`GET /metrics`, text format).

Requests, errors and latency by endpoint (the route's path template) and status come from
Litestar's Prometheus middleware; the rest is the service's own: reloads, the served versions,
events accepted and refused, experiment assignments.

With several worker processes (`recsys serve --workers N`) each process writes its samples to
files in `PROMETHEUS_MULTIPROC_DIR` (the serve command makes a fresh one) and a scrape of any
worker sums the counters and histograms of all of them; the served-version gauge is reported per
live worker (`pid` label). The variable must be set before `prometheus_client` is first imported.
"""

from __future__ import annotations

import os

from litestar import Controller, MediaType, Response, get
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "recsys"
# Responses take milliseconds; the default buckets (5 ms .. 10 s) would put them all in one.
LATENCY_BUCKETS: list[str | float] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]

REQUESTS = PrometheusConfig(
    app_name=PREFIX,
    prefix=PREFIX,
    group_path=True,  # /recommend/places, not one series per query string
    exclude_unhandled_paths=True,  # a scan of random paths does not grow the series
    buckets=LATENCY_BUCKETS,
    exclude=["/metrics"],
)

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
