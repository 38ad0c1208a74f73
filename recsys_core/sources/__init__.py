"""World sources: each reads one kind of data into a `RawWorld` (a vocabulary and partial tables).

`recsys_core.completion.complete_world` then makes any `RawWorld` the five contract tables
(`sources.world.completed_world`), and the same asset checks guard them whatever the source was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recsys_core.sources.base import RawWorld, SourceError
from recsys_core.vocabulary import BUILTIN, VOCABULARY_FILE, Vocabulary


@dataclass(frozen=True)
class Reader:
    """How one kind of source is read: what its location is and the function that reads it."""

    expects: Literal["directory", "file", "dsn"]
    read: Callable[[str], RawWorld]
    example: str


def _parquet(location: str) -> RawWorld:
    from recsys_core.sources.files import read_parquet_dir

    return read_parquet_dir(Path(location))


def _lightgcn(location: str) -> RawWorld:
    from recsys_core.sources.files import read_lightgcn

    return read_lightgcn(Path(location))


def _lastfm(location: str) -> RawWorld:
    from recsys_core.sources.files import read_listens

    return read_listens(Path(location))


def _events(location: str) -> RawWorld:
    from recsys_core.sources.files import read_events

    return read_events(Path(location))


def _postgres(location: str) -> RawWorld:
    from recsys_core.sources.postgres import read_postgres  # psycopg is loaded only for this source

    return read_postgres(location)


READERS: dict[str, Reader] = {
    "parquet": Reader("directory", _parquet, "parquet:worlds/mine (users.parquet, places.parquet, ...)"),
    "lightgcn": Reader("directory", _lightgcn, "lightgcn:data/gowalla (train.txt)"),
    "lastfm": Reader("directory", _lastfm, "lastfm:data/lastfm (listens_train.txt, friends_train.txt)"),
    "events": Reader("file", _events, "events:events.csv (user_id,item_id[,timestamp,count,city,category])"),
    "postgres": Reader("dsn", _postgres, "postgres:postgresql://user@host/db"),
}


def read_parquet_vocabulary(directory: Path) -> Vocabulary:
    """A Parquet world's vocabulary (`vocabulary.json`; the built-in one without it), tables unread."""
    return Vocabulary.load(directory) if (Path(directory) / VOCABULARY_FILE).exists() else BUILTIN


__all__ = ["READERS", "RawWorld", "Reader", "SourceError", "read_parquet_vocabulary"]
