"""`recsys serve`: one uvicorn worker running the Litestar app."""

from __future__ import annotations

import os

# One request is a handful of small matrix products: BLAS/OpenMP worker threads only add
# hand-off latency and fight the event loop for the cores. Set before numpy/faiss load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import uvicorn  # noqa: E402

from serving.app import create_app, default_manifest_path  # noqa: E402
from serving.config import ServiceSettings  # noqa: E402


def serve(host: str, port: int, manifest: str | None, poll_interval_s: float = 2.0, settings: ServiceSettings | None = None) -> None:
    """`settings` default to the environment (RECSYS_ADMIN_TOKEN, RECSYS_CORS_ORIGINS, RECSYS_MAX_*_BYTES);
    a bad value is a ValueError naming the variable, before anything starts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = settings or ServiceSettings.from_env()
    path = Path(manifest) if manifest else default_manifest_path()
    log = logging.getLogger("serving")
    log.info("serving manifest %s on http://%s:%d (docs at /schema)", path, host, port)
    log.info("admin endpoints %s; CORS origins: %s; limits: bodies %d bytes, URLs %d bytes",
             "enabled" if settings.admin_token else "disabled (no RECSYS_ADMIN_TOKEN)",
             ", ".join(settings.cors_origins) or "none", settings.max_body_bytes, settings.max_url_bytes)
    uvicorn.run(create_app(path, poll_interval_s, settings), host=host, port=port, workers=1, access_log=False, log_level="info")
