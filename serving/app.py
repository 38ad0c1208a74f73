"""Application factory: dependency injection of the served artifacts, lifespan (initial load
and the manifest watcher), request limits, CORS, and error mapping so client mistakes are 4xx
JSON with the field named and nothing else (no stack traces) ever leaves the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faiss
import torch
from litestar import Litestar, MediaType, Request, Response
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import ClientException, HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE, HTTP_414_REQUEST_URI_TOO_LONG
from litestar.types import ASGIApp, Receive, Scope, Send

from recsys_core.feedback.experiment import CANDIDATE, experiment_path
from recsys_core.feedback.store import EVENTS_ENV, EventPaths
from recsys_core.manifest import candidate_manifest_path, live_manifest_path
from recsys_core.recommend.queries import RequestError
from serving import metrics
from serving.config import ServiceSettings
from serving.controllers import AdminController, OpsController, PeopleController, PlacesController, served
from serving.feedback import EventsController, EventSink
from serving.routing import ExperimentWatcher, Router
from serving.schemas import ErrorBody
from serving.state import ArtifactHolder

PROJECT_VAR = Path(__file__).resolve().parent.parent / "var"
DEFAULT_ARTIFACTS, DEFAULT_EVENTS = PROJECT_VAR / "artifacts", PROJECT_VAR / "events"
MANIFEST_ENV, POLL_INTERVAL_ENV = "RECSYS_MANIFEST", "RECSYS_POLL_INTERVAL_S"


def default_manifest_path() -> Path:
    return Path(os.environ.get(MANIFEST_ENV, live_manifest_path(os.environ.get("RECSYS_ARTIFACTS", DEFAULT_ARTIFACTS))))


def default_events_root() -> Path:
    return Path(os.environ.get(EVENTS_ENV, DEFAULT_EVENTS))


def _request_error(request: Request, exc: RequestError) -> Response:
    return Response(ErrorBody(exc.status, exc.message, exc.field), status_code=exc.status, media_type=MediaType.JSON)


def _field(key: object) -> str | None:
    """Litestar's error key -> the request field: `desired_tags[3]` -> `desired_tags`, but a field of
    a list's item keeps the item's index (`events[3].user_id`); `data` (the whole body) -> None."""
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(\[\d+\]\.[A-Za-z_][A-Za-z0-9_]*)?", str(key or ""))
    return match.group(0) if match and match.group(1) != "data" else None


def _http_error(request: Request, exc: HTTPException) -> Response:
    """Litestar's own errors (validation, 404/405 routing, 401/403, 413, 503) in the same shape:
    a validation failure lists each offending field and why, instead of echoing the URL."""
    field, detail = None, exc.detail
    problems = exc.extra if isinstance(exc.extra, list) else []
    problems = [p for p in problems if isinstance(p, dict) and p.get("message")]
    if problems:
        unknown = [re.search(r"unknown field `([^`]*)`", str(p["message"])) for p in problems]
        # an unknown field inside a list's item is named with the item: `events[3].surprise`
        keys = [
            f"{p.get('key')}.{u.group(1)}"
            if u and re.fullmatch(r"\w+\[\d+\]", str(p.get("key") or ""))
            else p.get("key")
            for p, u in zip(problems, unknown, strict=True)
        ]
        fields = [_field(k) or (u.group(1) if u else None) for k, u in zip(keys, unknown, strict=True)]
        field = next((f for f in fields if f), None)
        detail = "; ".join(
            f"{p['key']}: {p['message']}" if _field(p.get("key")) else f"request body: {p['message']}" for p in problems
        )
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        limit = request.route_handler.resolve_request_max_body_size()
        setting = " (RECSYS_MAX_BODY_BYTES)" if limit == request.app.state.settings.max_body_bytes else ""
        detail = f"request body is larger than {limit} bytes{setting}"
    return Response(
        ErrorBody(exc.status_code, detail, field),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=MediaType.JSON,
    )


class GuardedRequest(Request):
    """Malformed JSON that the untyped decoder does not report as malformed (nesting past its
    recursion limit, bytes that are not UTF-8) is a 400 like any other malformed JSON, not a 500."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise ClientException("JSON is malformed: nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise ClientException(f"JSON is malformed: not UTF-8 (byte {exc.start} of a string)") from None


class URLLengthLimit(ASGIMiddleware):
    """414 for a path + query string longer than the limit, before anything parses the query."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        # raw_path excludes the query string (ASGI), but some test clients put it there too
        path = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        query = scope.get("query_string", b"")
        size = len(path) + (1 + len(query) if query else 0)
        if size > self.max_bytes:
            raise HTTPException(
                status_code=HTTP_414_REQUEST_URI_TOO_LONG,
                detail=f"request URL is {size} bytes, longer than {self.max_bytes} (RECSYS_MAX_URL_BYTES): "
                "send a POST with a JSON body",
            )
        await next_app(scope, receive, send)


def create_app(
    manifest_path: Path | None = None,
    poll_interval_s: float = 2.0,
    settings: ServiceSettings | None = None,
    events_root: Path | None = None,
) -> Litestar:
    """`settings` default to the environment (`ServiceSettings.from_env`). The candidate manifest
    and the experiment file are looked for next to the live manifest."""
    settings = settings or ServiceSettings.from_env()
    live_path = Path(manifest_path or default_manifest_path())
    holder = ArtifactHolder(live_path, poll_interval_s)
    candidate = ArtifactHolder(candidate_manifest_path(live_path.parent), poll_interval_s, CANDIDATE, optional=True)
    experiment = ExperimentWatcher(experiment_path(live_path.parent))
    router = Router(holder, candidate, experiment)
    sink = EventSink(EventPaths(events_root or default_events_root()))

    async def follow_experiment() -> None:
        while True:
            await asyncio.sleep(poll_interval_s)
            experiment.refresh()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        torch.set_num_threads(1)  # one request is a few small matmuls: threads only add latency
        faiss.omp_set_num_threads(1)
        experiment.refresh()
        await holder.reload()
        await candidate.reload()
        sink.open()
        tasks = [
            asyncio.create_task(job)
            for job in (holder.watch(), candidate.watch(), follow_experiment(), sink.roll_forever())
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(sink.close)
            metrics.worker_exited()

    return Litestar(
        route_handlers=[
            PlacesController,
            PeopleController,
            EventsController,
            OpsController,
            AdminController,
            metrics.MetricsController,
        ],
        dependencies={
            "holder": Provide(lambda: holder, use_cache=True, sync_to_thread=False),
            "candidate": Provide(lambda: candidate, use_cache=True, sync_to_thread=False),
            "router": Provide(lambda: router, use_cache=True, sync_to_thread=False),
            "sink": Provide(lambda: sink, use_cache=True, sync_to_thread=False),
            "serving": Provide(lambda: served(holder), sync_to_thread=False),
        },
        exception_handlers={RequestError: _request_error, HTTPException: _http_error},
        middleware=[URLLengthLimit(settings.max_url_bytes), metrics.RequestMetrics()],
        request_max_body_size=settings.max_body_bytes,
        request_class=GuardedRequest,
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"], allow_headers=["Content-Type"]
        )
        if settings.cors_origins
        else None,
        state=State({"settings": settings}),
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="Outing recommendations",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "adminToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="RECSYS_ADMIN_TOKEN; admin endpoints are off without one",
                    )
                }
            ),
        ),
        logging_config=None,
    )


def main_app() -> Litestar:
    """Factory for `uvicorn --factory serving.app:main_app` and for each of `recsys serve --workers N`'s
    processes: everything from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    raw = os.environ.get(POLL_INTERVAL_ENV, "2.0")
    try:
        poll_interval_s = float(raw)
    except ValueError:
        raise ValueError(f"{POLL_INTERVAL_ENV} must be a number of seconds, got {raw!r}") from None
    return create_app(poll_interval_s=poll_interval_s)
