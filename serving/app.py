"""Application factory: dependency injection of the served artifacts, lifespan (initial load
and the manifest watcher), and error mapping so client mistakes are 4xx with the field named."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import AsyncIterator

import faiss
import torch
from litestar import Litestar, MediaType, Request, Response
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from recsys_core.manifest import live_manifest_path
from recsys_core.recommend.queries import RequestError
from serving.controllers import OpsController, PeopleController, PlacesController, served
from serving.state import ArtifactHolder

DEFAULT_ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "artifacts"


def default_manifest_path() -> Path:
    return Path(os.environ.get("RECSYS_MANIFEST", live_manifest_path(os.environ.get("RECSYS_ARTIFACTS", DEFAULT_ARTIFACTS))))


def _request_error(request: Request, exc: RequestError) -> Response:
    return Response({"status_code": exc.status, "detail": exc.message, "field": exc.field}, status_code=exc.status, media_type=MediaType.JSON)


def create_app(manifest_path: Path | None = None, poll_interval_s: float = 2.0) -> Litestar:
    holder = ArtifactHolder(manifest_path or default_manifest_path(), poll_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        torch.set_num_threads(1)  # one request is a few small matmuls: threads only add latency
        faiss.omp_set_num_threads(1)
        await asyncio.to_thread(holder.load_if_changed)
        watcher = asyncio.create_task(holder.watch())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    return Litestar(
        route_handlers=[PlacesController, PeopleController, OpsController],
        dependencies={
            "holder": Provide(lambda: holder, use_cache=True, sync_to_thread=False),
            "serving": Provide(lambda: served(holder), sync_to_thread=False),
        },
        exception_handlers={RequestError: _request_error},
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Outing recommendations", version="1.0.0", path="/schema"),
        logging_config=None,
    )


def main_app() -> Litestar:
    """Factory for `uvicorn --factory serving.app:main_app`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app()
