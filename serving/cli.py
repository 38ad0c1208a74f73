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


def serve(host: str, port: int, manifest: str | None, poll_interval_s: float = 2.0) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    path = Path(manifest) if manifest else default_manifest_path()
    logging.getLogger("serving").info("serving manifest %s on http://%s:%d (docs at /schema)", path, host, port)
    uvicorn.run(create_app(path, poll_interval_s), host=host, port=port, workers=1, access_log=False, log_level="info")
