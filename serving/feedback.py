"""`POST /events`: feedback events into the durable log, answered only once they are on disk.

Each worker appends to its own log segments (`recsys_core.feedback.log`) and, every
`ROLL_INTERVAL_S`, rolls the segments no writer holds (its own closed ones, and those of a worker
that died) into the Parquet store the `online_metrics` asset reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter as Tally

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_429_TOO_MANY_REQUESTS, HTTP_503_SERVICE_UNAVAILABLE

from recsys_core.feedback.events import MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH, batch_problems
from recsys_core.feedback.log import EventLog, LogFull, LogSettings, LogUnavailable
from recsys_core.feedback.store import EventPaths, roll_segments
from recsys_core.recommend.queries import RequestError
from serving import metrics
from serving.controllers import errors
from serving.schemas import ErrorBody, EventBatch, EventsAccepted
from serving.state import ArtifactHolder

logger = logging.getLogger("serving.events")

ROLL_INTERVAL_S = 10.0


class EventSink:
    """The worker's event log and its rolling into Parquet; `None` log until the lifespan opens it."""

    def __init__(self, paths: EventPaths, settings: LogSettings | None = None):
        self.paths = paths
        self.settings = settings or LogSettings(paths.log)
        self.log: EventLog | None = None

    def open(self) -> None:
        self.log = EventLog(self.settings)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    async def roll_forever(self, interval_s: float = ROLL_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                report = await asyncio.to_thread(roll_segments, self.paths)
                if report.segments:
                    logger.info(
                        "rolled %d segments (%d events) into %s", report.segments, report.events, self.paths.store
                    )
            except Exception:  # a failed roll leaves the segments for the next one
                logger.exception("rolling event segments in %s failed", self.paths.log)


Sink = NamedDependency[EventSink]
Holder = NamedDependency[ArtifactHolder]


class EventsController(Controller):
    path = "/events"
    tags = ["feedback"]

    @post(
        status_code=HTTP_200_OK,
        request_max_body_size=MAX_BATCH_BYTES,
        summary=f"Record feedback events (at most {MAX_EVENTS_PER_BATCH} a batch); 200 once they are on disk",
        responses=errors(400, 413, 414, 429, 503),
    )
    async def post_events(self, data: JSONBody[EventBatch], sink: Sink, holder: Holder) -> Response[object]:
        now = dt.datetime.now(dt.UTC)
        current = holder.current  # ids are checked against the live version (all arms share its world)
        art = current.artifacts if current else None
        problems = batch_problems(data.events, now, art.user_ids if art else None, art.place_ids if art else None)
        if problems:
            metrics.EVENTS.labels("rejected").inc(len(data.events))
            first = problems[0]
            more = f" (and {len(problems) - 1} more: {'; '.join(map(str, problems[1:5]))})" if len(problems) > 1 else ""
            raise RequestError(f"events[{first.index}].{first.field}", f"{first}{more}; nothing was recorded")
        log = sink.log
        if log is None:
            return _unavailable("the event log is not open", len(data.events))
        try:
            done = log.append(data.events, received_at=now)
        except LogFull as exc:
            metrics.EVENTS.labels("throttled").inc(len(data.events))
            return Response(
                ErrorBody(HTTP_429_TOO_MANY_REQUESTS, f"{exc}; nothing was recorded"),
                status_code=HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(exc.retry_after_s)},
            )
        except LogUnavailable as exc:
            return _unavailable(str(exc), len(data.events))
        try:
            accepted = await asyncio.wrap_future(done)
        except LogUnavailable as exc:
            return _unavailable(str(exc), len(data.events))
        metrics.EVENTS.labels("accepted").inc(accepted)
        for kind, count in Tally(e.type for e in data.events).items():
            metrics.EVENTS_BY_TYPE.labels(kind).inc(count)
        return Response(EventsAccepted(accepted), status_code=HTTP_200_OK)


def _unavailable(detail: str, events: int) -> Response[object]:
    metrics.EVENTS.labels("failed").inc(events)
    return Response(
        ErrorBody(HTTP_503_SERVICE_UNAVAILABLE, f"{detail}; nothing was recorded, retry later"),
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )
