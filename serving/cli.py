"""`recsys serve`: the Litestar app on uvicorn, in one process or a worker process per core.

Each worker loads the served version itself and follows the manifest on its own (a worker
that sees a new manifest loads it in the background and swaps it in), so after a publication
every worker serves the new version within a poll interval. `POST /admin/reload` reaches the
one worker that accepted the request; the others load a changed manifest when they next poll,
and retry one that failed to load when it is published again.
"""

from __future__ import annotations

import os

# One request is a handful of small matrix products: BLAS/OpenMP worker threads only add
# hand-off latency and fight the event loop for the cores. Set before numpy/faiss load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# E402 below: these imports load numpy and faiss, so they must come after the variables are set.
import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import uvicorn  # noqa: E402

from recsys_core.cli import Command  # noqa: E402
from serving.app import MANIFEST_ENV, POLL_INTERVAL_ENV, create_app, default_manifest_path  # noqa: E402
from serving.config import ServiceSettings  # noqa: E402
from serving.metrics import MULTIPROC_ENV  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_POLL_INTERVAL_S = 2.0


def serve(
    host: str, port: int, manifest: str | None, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S, workers: int = 1
) -> None:
    """Settings come from the environment (RECSYS_ADMIN_TOKEN, RECSYS_CORS_ORIGINS, RECSYS_MAX_*_BYTES);
    a bad value is a ValueError naming the variable, before anything starts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if poll_interval_s <= 0:
        raise ValueError(f"--poll-interval must be positive, got {poll_interval_s}")
    settings = ServiceSettings.from_env()
    path = Path(manifest) if manifest else default_manifest_path()
    log = logging.getLogger("serving")
    log.info("serving manifest %s on http://%s:%d with %d worker(s) (docs at /schema)", path, host, port, workers)
    log.info(
        "admin endpoints %s; CORS origins: %s; limits: bodies %d bytes, URLs %d bytes",
        "enabled" if settings.admin_token else "disabled (no RECSYS_ADMIN_TOKEN)",
        ", ".join(settings.cors_origins) or "none",
        settings.max_body_bytes,
        settings.max_url_bytes,
    )
    if workers == 1:
        uvicorn.run(
            create_app(path, poll_interval_s, settings), host=host, port=port, access_log=False, log_level="info"
        )
        return
    # Worker processes import the app themselves (`main_app`), configured through the environment;
    # their metrics meet in one fresh directory (any worker's /metrics reports them all).
    os.environ[MANIFEST_ENV], os.environ[POLL_INTERVAL_ENV] = str(path), str(poll_interval_s)
    os.environ[MULTIPROC_ENV] = str(_fresh_metrics_directory(os.environ.get(MULTIPROC_ENV)))
    uvicorn.run(
        "serving.app:main_app", factory=True, workers=workers, host=host, port=port, access_log=False, log_level="info"
    )


def _fresh_metrics_directory(given: str | None) -> Path:
    """The workers' shared metrics directory, emptied: samples of an earlier run would be summed in."""
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="recsys-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--manifest", help="serving manifest to follow (default: var/artifacts/serving/manifest.json)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL_S,
        help="seconds between checks for a newer manifest",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (one per core for throughput; each holds its own copy of the served artifacts)",
    )


def _serve(args: argparse.Namespace) -> None:
    serve(args.host, args.port, args.manifest, args.poll_interval, args.workers)


SERVE = Command("run the recommendation service (Litestar on uvicorn)", _serve_arguments, _serve)
