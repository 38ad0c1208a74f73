"""The feedback event log: acknowledged means on disk (through a SIGKILL), backpressure before loss,
segments rolled into Parquet exactly once, and every broken rule named with its event's index."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import msgspec
import pyarrow.parquet as pq
import pytest

from recsys_core.feedback import log as log_module
from recsys_core.feedback.events import FeedbackEvent, batch_problems
from recsys_core.feedback.log import EventLog, LogFull, LogSettings
from recsys_core.feedback.store import EventPaths, read_events, roll_segments, stored_days

NOW = dt.datetime(2026, 12, 2, 18, 0, tzinfo=dt.UTC)


def _impressions(n: int, user: int = 1, at: dt.datetime = NOW) -> list[FeedbackEvent]:
    return [
        FeedbackEvent("impression", user, at, request_id=f"r{i}", variant="v1", place_id=i, position=i % 10)
        for i in range(n)
    ]


def test_acknowledged_batches_are_rolled_into_parquet_by_day_once(tmp_path):
    paths = EventPaths(tmp_path)
    log = EventLog(LogSettings(paths.log))
    yesterday = NOW - dt.timedelta(days=1)
    done = [log.append(_impressions(30)), log.append(_impressions(20, user=2, at=yesterday))]
    assert [f.result(timeout=10) for f in done] == [30, 20]
    assert roll_segments(paths).busy == 1  # the open segment is its writer's: not rolled
    log.close()
    report = roll_segments(paths)
    assert (report.segments, report.events, report.torn_lines) == (1, 50, 0)
    assert stored_days(paths.store) == [yesterday.date(), NOW.date()]
    today = read_events(paths.store, [NOW.date()])
    assert today.num_rows == 30 and set(today.column("user_id").to_pylist()) == {1}
    assert today.column("received_at").null_count == 0
    assert roll_segments(paths).segments == 0 and not list(paths.log.glob("seg-*"))  # nothing rolled twice


def _closed_segment(paths: EventPaths, events: int):
    """A segment holding one acknowledged batch, its log closed (so a roller may take it)."""
    log = EventLog(LogSettings(paths.log))
    log.append(_impressions(events)).result(timeout=10)
    log.close()
    return log.segment


def test_rolling_a_segment_again_rewrites_its_file_instead_of_duplicating(tmp_path):
    paths = EventPaths(tmp_path)
    segment = _closed_segment(paths, 5)
    kept = segment.read_bytes()
    roll_segments(paths)
    segment.write_bytes(kept)  # a crash after the Parquet write, before the segment was deleted
    roll_segments(paths)
    assert read_events(paths.store, stored_days(paths.store)).num_rows == 5


def test_a_torn_last_line_is_dropped_and_an_unreadable_one_quarantines_its_segment(tmp_path):
    paths = EventPaths(tmp_path)
    segment = _closed_segment(paths, 3)
    whole = segment.read_bytes()
    segment.write_bytes(whole + whole[:25])  # a second batch cut off mid-write: never acknowledged
    report = roll_segments(paths)
    assert (report.events, report.torn_lines) == (3, 1)

    segment = _closed_segment(paths, 2)
    segment.write_bytes(b"not json\n" + segment.read_bytes())
    report = roll_segments(paths)
    assert (report.events, report.unreadable_lines) == (2, 1)
    assert (paths.quarantine / segment.name).is_file()  # kept, not deleted


def test_a_full_queue_refuses_with_a_retry_delay_and_queues_nothing(tmp_path, monkeypatch):
    release = threading.Event()
    real_fsync = os.fsync

    def slow_disk(fd: int) -> None:
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(log_module.os, "fsync", slow_disk)
    log = EventLog(LogSettings(EventPaths(tmp_path).log, max_pending_events=10))
    first = log.append(_impressions(10))
    with pytest.raises(LogFull) as refused:
        log.append(_impressions(1))
    assert refused.value.retry_after_s >= 1 and "limit 10" in str(refused.value)
    assert log.counters.rejected_full == 1
    release.set()
    assert first.result(timeout=10) == 10
    log.append(_impressions(1)).result(timeout=10)  # room again once the disk caught up
    log.close()
    assert log.counters.events == 11


def test_a_failed_write_is_not_acknowledged_and_does_not_corrupt_the_segment(tmp_path, monkeypatch):
    paths = EventPaths(tmp_path)
    log = EventLog(LogSettings(paths.log))
    log.append(_impressions(4)).result(timeout=10)
    real_write = os.write

    def half_then_fail(fd: int, data) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log_module.os, "write", half_then_fail)
    failed = log.append(_impressions(6))
    with pytest.raises(log_module.LogUnavailable, match="No space left"):
        failed.result(timeout=10)
    monkeypatch.setattr(log_module.os, "write", real_write)
    log.append(_impressions(2)).result(timeout=10)
    log.close()
    report = roll_segments(paths)
    assert (report.events, report.unreadable_lines, report.torn_lines) == (6, 0, 0)  # 4 + 2: the failed 6 cut away


WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    from recsys_core.feedback.events import FeedbackEvent
    from recsys_core.feedback.log import EventLog, LogSettings
    log = EventLog(LogSettings(Path(sys.argv[1]), segment_bytes=20_000))
    now = dt.datetime.now(dt.UTC)
    batch = [FeedbackEvent("visit", 7, now, place_id=i) for i in range(25)]
    while True:
        pending = [log.append(batch) for _ in range(4)]
        for done in pending:
            done.result()
            print("ack", flush=True)
    """
)


def test_every_acknowledged_event_survives_a_sigkill_of_the_writer(tmp_path):
    paths = EventPaths(tmp_path)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(paths.log)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    assert writer.stdout is not None
    acknowledged = 0
    deadline = time.monotonic() + 60
    while acknowledged < 400 and time.monotonic() < deadline:  # kill it mid-burst, segments rolling over
        if writer.stdout.readline().strip() == "ack":
            acknowledged += 1
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(10)
    acknowledged += sum(line.strip() == "ack" for line in writer.stdout)  # acks printed before the kill
    assert acknowledged >= 400
    report = roll_segments(paths)  # the dead writer's locks are gone: every segment rolls
    assert report.busy == 0 and report.segments >= 2
    stored = read_events(paths.store, stored_days(paths.store)).num_rows
    assert stored >= 25 * acknowledged  # nothing acknowledged lost (more: written, not yet acknowledged)


def _event(**fields) -> FeedbackEvent:
    base = {"type": "impression", "user_id": 3, "timestamp": NOW.isoformat(), "request_id": "r", "variant": "v"}
    return msgspec.convert({**base, **fields}, FeedbackEvent)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"place_id": 1}, "position", "position"),
        ({"position": 0}, "place_id", "exactly one item"),
        ({"position": 0, "place_id": 1, "other_user_id": 2}, "place_id", "exactly one item"),
        ({"type": "click", "place_id": 1, "variant": None}, "variant", "required for a click"),
        ({"type": "visit"}, "place_id", "required for a visit"),
        ({"type": "save", "place_id": 1, "other_user_id": 2}, "other_user_id", "use a join"),
        ({"type": "join"}, "other_user_id", "required for a join"),
        ({"type": "join", "other_user_id": 3}, "other_user_id", "user_id itself"),
        ({"type": "visit", "place_id": 1, "timestamp": "2026-12-02T19:00:00Z"}, "timestamp", "future"),
        ({"type": "visit", "place_id": 1, "timestamp": "2026-10-01T19:00:00Z"}, "timestamp", "30 days old"),
        ({"type": "visit", "place_id": 999}, "place_id", "unknown place 999"),
        ({"type": "visit", "place_id": 1, "user_id": 55}, "user_id", "unknown user 55"),
    ],
)
def test_each_rule_names_the_field_and_the_event_index(fields, field, words):
    import numpy as np

    good = _event(type="visit", place_id=1)
    problems = batch_problems([good, _event(**fields)], NOW, np.array([2, 3]), np.array([1, 5]))
    assert len(problems) == 1 and (problems[0].index, problems[0].field) == (1, field)
    assert words in str(problems[0]) and str(problems[0]).startswith(f"events[1].{field}: ")


def test_a_rolled_file_is_plain_parquet_any_reader_opens(tmp_path):
    paths = EventPaths(tmp_path)
    log = EventLog(LogSettings(paths.log))
    log.append(_impressions(2)).result(timeout=10)
    log.close()
    roll_segments(paths)
    (file,) = paths.store.rglob("*.parquet")
    table = pq.read_table(file)
    assert table.column("type").to_pylist() == ["impression", "impression"]
    assert table.column("position").to_pylist() == [0, 1]
