"""A source's world, read and completed once per process and location.

Each world asset asks for its own city's rows; reading and completing the whole source for each
would repeat the same work per asset and city, so the completed world is kept for the process
(files are keyed by their modification times, so a changed file is read again; PostgreSQL is
read afresh each time, as its tables may change under us).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from recsys_core.completion import complete_world
from recsys_core.sources import READERS
from recsys_core.vocabulary import Vocabulary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletedWorld:
    vocabulary: Vocabulary
    tables: dict[str, pa.Table]  # the five contract tables, every city


def _signature(location: str) -> tuple[tuple[str, int, int], ...]:
    path = Path(location)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.exists())


def completed_world(kind: str, location: str, seed: int) -> CompletedWorld:
    """The source at `location` read (`READERS[kind]`) and completed (`completion.complete_world`)."""
    if kind not in READERS:
        raise ValueError(f"unknown world source kind {kind!r}; known: {', '.join(READERS)}")
    if READERS[kind].expects == "dsn":
        return _read_and_complete(kind, location, seed)
    return _cached(kind, location, seed, _signature(location))


@lru_cache(maxsize=2)
def _cached(kind: str, location: str, seed: int, signature: tuple[tuple[str, int, int], ...]) -> CompletedWorld:
    del signature  # part of the cache key only
    return _read_and_complete(kind, location, seed)


def _read_and_complete(kind: str, location: str, seed: int) -> CompletedWorld:
    started = time.perf_counter()
    raw = READERS[kind].read(location)
    tables = complete_world(raw.tables, raw.vocabulary, seed)
    rows = ", ".join(f"{name} {table.num_rows:,}" for name, table in tables.items())
    logger.info("read the %s world in %.1fs: %s", kind, time.perf_counter() - started, rows)
    return CompletedWorld(raw.vocabulary, tables)
