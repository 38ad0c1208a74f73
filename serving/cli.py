"""`recsys serve`: one uvicorn worker running the Litestar app."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from serving.app import create_app, default_manifest_path


def serve(host: str, port: int, manifest: str | None, poll_interval_s: float = 2.0) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    path = Path(manifest) if manifest else default_manifest_path()
    logging.getLogger("serving").info("serving manifest %s on http://%s:%d (docs at /schema)", path, host, port)
    uvicorn.run(create_app(path, poll_interval_s), host=host, port=port, workers=1, access_log=False, log_level="info")
