"""The event log: an append-only, fsynced, segmented file per writer process.

A batch is acknowledged only after its line is on disk (written and fsynced), so an acknowledged
event survives a SIGKILL of the process, or of the machine's power. One writer thread per log
commits whatever batches have queued since its last fsync in one write and one fsync (group
commit): a burst of small POSTs costs a few fsyncs, not one each.

Segments: `seg-<utc time>-<pid>-<n>.log` under the log directory. A writer holds an exclusive
`flock` on the segment it appends to; it starts a new one when the current one reaches
`segment_bytes` or `segment_seconds`, and closing the old file releases its lock. So a segment
nobody holds a lock on is complete (or its writer died): `roll.roll_segments` turns exactly those
into Parquet. A segment is created under a hidden name and renamed once locked, so a roller never
sees one before its writer holds it.

Backpressure: at most `max_pending_events` may wait for the disk; beyond that `append` raises
`LogFull` with a retry delay from the recent commit rate, and nothing is queued, so the caller
answers 429 instead of accepting what it could lose.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from recsys_core.feedback.events import FeedbackEvent, LogRecord
from recsys_core.files import fsync_directory

logger = logging.getLogger("recsys.events")

SEGMENT_PREFIX, SEGMENT_SUFFIX = "seg-", ".log"
_encoder = msgspec.json.Encoder()


class LogFull(RuntimeError):
    """More events wait for the disk than the log holds: retry after `retry_after_s`."""

    def __init__(self, pending: int, limit: int, retry_after_s: int):
        super().__init__(f"{pending} events are waiting to be written (limit {limit}); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class LogUnavailable(RuntimeError):
    """The log cannot take events (closed, or the disk refused a write): nothing was acknowledged."""


@dataclass(frozen=True)
class LogSettings:
    directory: Path
    max_pending_events: int = 50_000
    segment_bytes: int = 8 << 20
    segment_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.max_pending_events < 1 or self.segment_bytes < 1 or self.segment_seconds <= 0:
            raise ValueError(f"event log settings must be positive: {self}")


@dataclass
class LogCounters:
    """Since the log opened: what was acknowledged, and how often the disk was asked."""

    batches: int = 0
    events: int = 0
    fsyncs: int = 0
    segments: int = 0
    rejected_full: int = 0
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))  # (time, events) per commit

    def commit_rate(self) -> float:
        """Events per second over the recent commits (0 before two commits)."""
        if len(self.recent) < 2:
            return 0.0
        span = self.recent[-1][0] - self.recent[0][0]
        return sum(n for _, n in list(self.recent)[1:]) / span if span > 0 else 0.0


@dataclass
class _Pending:
    line: bytes
    events: int
    done: Future[int]


class EventLog:
    def __init__(self, settings: LogSettings):
        self.settings = settings
        self.counters = LogCounters()
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._pending_events = 0
        self._closed = False
        self._sequence = 0
        settings.directory.mkdir(parents=True, exist_ok=True)
        self._fd, self._path, self._opened_at, self._bytes = self._new_segment()
        self._thread = threading.Thread(target=self._run, name="event-log-writer", daemon=True)
        self._thread.start()

    @property
    def segment(self) -> Path:
        """The segment being appended to now."""
        return self._path

    def append(self, events: Sequence[FeedbackEvent], received_at: dt.datetime | None = None) -> Future[int]:
        """Queue a batch; the future resolves to its event count once it is on disk, or fails
        with `LogUnavailable`. Raises `LogFull` (nothing queued) when the queue is full."""
        record = LogRecord(received_at or dt.datetime.now(dt.UTC), list(events))
        line = _encoder.encode(record) + b"\n"
        done: Future[int] = Future()
        with self._cond:
            if self._closed:
                raise LogUnavailable("the event log is closed")
            limit = self.settings.max_pending_events
            if self._pending_events and self._pending_events + len(events) > limit:
                self.counters.rejected_full += 1
                rate = self.counters.commit_rate()
                retry = math.ceil(self._pending_events / rate) if rate > 0 else 1
                raise LogFull(self._pending_events, limit, max(1, min(retry, 60)))
            self._queue.append(_Pending(line, len(events), done))
            self._pending_events += len(events)
            self._cond.notify()
        return done

    @property
    def pending_events(self) -> int:
        with self._cond:
            return self._pending_events

    def close(self) -> None:
        """Commit what is queued, then stop; the last segment is left for the roller."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _new_segment(self) -> tuple[int, Path, float, int]:
        self._sequence += 1
        now = dt.datetime.now(dt.UTC)
        name = f"{SEGMENT_PREFIX}{now:%Y%m%dT%H%M%S%f}-{os.getpid()}-{self._sequence:06d}{SEGMENT_SUFFIX}"
        final = self.settings.directory / name
        hidden = final.with_name("." + name)
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the segment is closed: rollers leave it alone
        os.rename(hidden, final)
        fsync_directory(self.settings.directory)
        self.counters.segments += 1
        return fd, final, time.monotonic(), 0

    def _rotate(self, force_close: bool = False) -> None:
        """Start a new segment (the old one's lock goes with its file), or just close at the end."""
        old_fd, old_path, old_bytes = self._fd, self._path, self._bytes
        if not force_close:
            self._fd, self._path, self._opened_at, self._bytes = self._new_segment()
        if old_bytes == 0:
            old_path.unlink(missing_ok=True)  # nothing in it: no file for the roller
        os.close(old_fd)

    def _due(self) -> bool:
        if self._bytes >= self.settings.segment_bytes:
            return True
        return self._bytes > 0 and time.monotonic() - self._opened_at >= self.settings.segment_seconds

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    if not self._cond.wait(timeout=self.settings.segment_seconds / 4) and self._due():
                        break
                batch, self._queue = self._queue, []
                closing = self._closed and not batch
            if batch:
                self._commit(batch)
            if closing:
                self._rotate(force_close=True)
                return
            if self._due():
                try:
                    self._rotate()
                except OSError as exc:  # keep appending to the current segment; try again later
                    logger.error("event log: cannot start a new segment in %s: %s", self.settings.directory, exc)

    def _commit(self, batch: list[_Pending]) -> None:
        data = b"".join(p.line for p in batch)
        events = sum(p.events for p in batch)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            logger.error("event log: write to %s failed, %d events not acknowledged: %s", self._path, events, exc)
            # A part-written line must not run into the next batch's: cut the segment back to its
            # last whole line (what was acknowledged stays byte for byte).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._bytes)
            error = LogUnavailable(f"the event log could not write to disk: {exc.strerror or exc}")
            for pending in batch:
                pending.done.set_exception(error)
        else:
            self._bytes += len(data)
            counters = self.counters
            counters.batches += len(batch)
            counters.events += events
            counters.fsyncs += 1
            counters.recent.append((time.monotonic(), events))
            for pending in batch:
                pending.done.set_result(pending.events)
        finally:
            with self._cond:
                self._pending_events -= events
