"""Rolling the event log into Parquet, and reading the events back by day.

`roll_segments` takes every segment no writer holds (closed ones, and those of a process that
died), writes its events into `<store>/day=<YYYY-MM-DD>/<segment>.parquet` by the day of each
event's timestamp (UTC), and only then deletes the segment. A file is named after its segment,
so rolling a segment again after a crash between the two steps rewrites the same file instead of
duplicating its events. A segment's torn last line (its writer was killed mid-write, before the
fsync that would have acknowledged it) is dropped; a line that cannot be read anywhere else is
counted, and the segment is kept under `quarantine/` rather than deleted.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_core.feedback.events import EVENTS_SCHEMA, LogRecord, events_table
from recsys_core.feedback.log import SEGMENT_PREFIX, SEGMENT_SUFFIX
from recsys_core.files import fsync_directory, write_atomically

logger = logging.getLogger("recsys.events")

EVENTS_ENV = "RECSYS_EVENTS"  # the events root of a deployment: the service writes it, the pipeline reads it
LOG_DIR, STORE_DIR, QUARANTINE_DIR = "log", "parquet", "quarantine"
DAY_PREFIX = "day="
_decoder = msgspec.json.Decoder(LogRecord)


@dataclass(frozen=True)
class EventPaths:
    """Where a deployment's events live: the log the service appends to, the Parquet store."""

    root: Path

    @property
    def log(self) -> Path:
        return self.root / LOG_DIR

    @property
    def store(self) -> Path:
        return self.root / STORE_DIR

    @property
    def quarantine(self) -> Path:
        return self.root / QUARANTINE_DIR


@dataclass
class RollReport:
    segments: int = 0
    events: int = 0
    torn_lines: int = 0  # a last line cut short: never acknowledged
    unreadable_lines: int = 0  # a complete line that does not decode: its segment is quarantined
    busy: int = 0  # segments a writer still holds

    def add(self, other: RollReport) -> None:
        for name in ("segments", "events", "torn_lines", "unreadable_lines", "busy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def day_directory(store: Path, day: dt.date) -> Path:
    return store / f"{DAY_PREFIX}{day.isoformat()}"


def _records(data: bytes, name: str, report: RollReport) -> list[LogRecord]:
    lines = data.split(b"\n")
    if lines and lines[-1]:  # no newline after the last line: its write did not finish
        report.torn_lines += 1
        logger.warning("event log %s: dropping a torn last line (%d bytes, never acknowledged)", name, len(lines[-1]))
    records = []
    for number, line in enumerate(lines[:-1]):
        try:
            records.append(_decoder.decode(line))
        except msgspec.DecodeError as exc:
            report.unreadable_lines += 1
            logger.error("event log %s line %d does not decode (%s); the segment is quarantined", name, number, exc)
    return records


def _write_days(table: pa.Table, store: Path, stem: str) -> None:
    days = pc.cast(table.column("timestamp"), pa.date32())
    for day in pc.unique(days).to_pylist():
        if day is None:  # a timestamp is required by the event struct: not reached
            continue
        part = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
        buffer = io.BytesIO()
        pq.write_table(part, buffer)
        write_atomically(day_directory(store, day) / f"{stem}.parquet", buffer.getvalue(), mode=0o644)


def roll_segment(path: Path, paths: EventPaths) -> RollReport:
    """One segment into the store, if no writer holds it."""
    report = RollReport()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # another roller took it
        return report
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.busy += 1
            return report
        if not path.exists():  # rolled and deleted while we waited to open it
            return report
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        records = _records(data, path.name, report)
        table = events_table(records)
        if table.num_rows:
            _write_days(table, paths.store, path.stem)
        if report.unreadable_lines:
            paths.quarantine.mkdir(parents=True, exist_ok=True)
            os.replace(path, paths.quarantine / path.name)
        else:
            path.unlink()
        fsync_directory(path.parent)
        report.segments += 1
        report.events += table.num_rows
        return report
    finally:
        os.close(fd)


def roll_segments(paths: EventPaths) -> RollReport:
    """Every segment no writer holds, oldest first."""
    report = RollReport()
    if not paths.log.is_dir():
        return report
    for path in sorted(paths.log.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")):
        report.add(roll_segment(path, paths))
    return report


def stored_days(store: Path) -> list[dt.date]:
    """The days the store has events for."""
    if not store.is_dir():
        return []
    days = []
    for directory in store.glob(f"{DAY_PREFIX}*"):
        try:
            days.append(dt.date.fromisoformat(directory.name.removeprefix(DAY_PREFIX)))
        except ValueError:
            continue
    return sorted(days)


def shown_pairs(store: Path) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, place ids) of every place impression stored: what the served versions showed."""
    users, places = [], []
    for day in stored_days(store):
        for file in sorted(day_directory(store, day).glob("*.parquet")):
            table = pq.read_table(file, columns=["type", "user_id", "place_id"], schema=EVENTS_SCHEMA)
            table = table.filter(
                pc.and_(pc.equal(table.column("type"), pa.scalar("impression")), pc.is_valid(table.column("place_id")))
            )
            users.append(table.column("user_id").to_numpy())
            places.append(table.column("place_id").to_numpy())
    if not users:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(users), np.concatenate(places)


def read_event_file(path: Path) -> pa.Table:
    return pq.read_table(path, schema=EVENTS_SCHEMA)


def read_events(store: Path, days: Iterable[dt.date]) -> pa.Table:
    """The stored events of the given days, as one `EVENTS_SCHEMA` table (empty when none)."""
    tables = [read_event_file(file) for day in days for file in sorted(day_directory(store, day).glob("*.parquet"))]
    return pa.concat_tables(tables) if tables else EVENTS_SCHEMA.empty_table()
