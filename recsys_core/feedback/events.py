"""Feedback events: what a user did after a recommendation, as the service accepts and stores them.

An event names its type, the user, the item (a place, or another person), when it happened and,
for what a response showed, the `request_id` and `variant` of that response, so online metrics
can tie a click back to the impression and to the model version that produced it.

The types' rules (checked by `event_problem`, beyond the field types the Struct enforces):
- `impression`, `click`: a response's item, so `request_id` and `variant` are required, and
  exactly one of `place_id` / `other_user_id`; an impression also says its `position` (0 = top);
- `visit` (a check-in) and `save`: a place, `place_id`; `request_id` and `variant` when the visit
  followed a recommendation (absent: an organic visit);
- `join`: a person who was invited along or joined, `other_user_id` (not the user), optionally
  the `place_id` it was for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
import numpy as np
import pyarrow as pa

from recsys_core.contracts import I32, I64, TIMESTAMP
from recsys_core.recommend.limits import MAX_ID, MAX_TOP_K

EVENT_TYPES = ("impression", "click", "visit", "save", "join")
EventType = Literal["impression", "click", "visit", "save", "join"]
SHOWN = frozenset({"impression", "click"})  # an item of a response: request_id and variant required
PLACE_ONLY = frozenset({"visit", "save"})

MAX_EVENTS_PER_BATCH = 1000  # a POST /events body; larger batches are a 400 asking to split them
MAX_EVENT_BYTES = 512  # what one event may take in JSON, its tokens at full length included
MAX_BATCH_BYTES = MAX_EVENTS_PER_BATCH * MAX_EVENT_BYTES  # POST /events' body limit (the others': 64 KiB)
MAX_TOKEN_CHARS = 64  # request ids, variants and client event ids
MAX_FUTURE_SKEW = dt.timedelta(minutes=5)  # a client clock this far ahead is still believed
MAX_EVENT_AGE = dt.timedelta(days=30)  # older events would reopen finished days' metrics

Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN_CHARS, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Position = Annotated[int, msgspec.Meta(ge=0, lt=MAX_TOP_K)]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]  # RFC 3339 with an offset: "2026-12-02T18:00:00Z"


class FeedbackEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    type: EventType
    user_id: Id
    timestamp: Timestamp
    request_id: Token | None = None
    variant: Token | None = None
    place_id: Id | None = None
    other_user_id: Id | None = None
    position: Position | None = None
    event_id: Token | None = None  # the client's own id for the event, stored as given


@dataclass(frozen=True)
class EventProblem:
    """What is wrong with one event of a batch: `events[index].field: message`."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"events[{self.index}].{self.field}: {self.message}"


def event_problem(event: FeedbackEvent, now: dt.datetime) -> tuple[str, str] | None:
    """The first rule of its type the event breaks, as (field, message); None when it is valid."""
    kind = event.type
    if kind in SHOWN:
        for name in ("request_id", "variant"):
            if getattr(event, name) is None:
                return name, f"required for a {kind}: the request_id and variant of the response that showed it"
        if (event.place_id is None) == (event.other_user_id is None):
            return "place_id", f"a {kind} names exactly one item: place_id or other_user_id"
        if kind == "impression" and event.position is None:
            return "position", "required for an impression: the item's rank in the response, 0 for the top"
    elif kind in PLACE_ONLY:
        if event.place_id is None:
            return "place_id", f"required for a {kind}"
        if event.other_user_id is not None:
            return "other_user_id", f"a {kind} is of a place; use a join for a person"
    elif event.other_user_id is None:
        return "other_user_id", "required for a join: the person invited or joining"
    if event.other_user_id is not None and event.other_user_id == event.user_id:
        return "other_user_id", "is the user_id itself"
    if event.timestamp > now + MAX_FUTURE_SKEW:
        return "timestamp", f"{event.timestamp.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})"
    if event.timestamp < now - MAX_EVENT_AGE:
        return "timestamp", f"{event.timestamp.isoformat()} is more than {MAX_EVENT_AGE.days} days old"
    return None


def batch_problems(
    events: Sequence[FeedbackEvent],
    now: dt.datetime,
    user_ids: np.ndarray | None = None,
    place_ids: np.ndarray | None = None,
    limit: int = 20,
) -> list[EventProblem]:
    """Every event's rule problems, then ids the served world does not have (`user_ids`,
    `place_ids`: its sorted ids; None skips the check); at most `limit`, in event order."""
    problems = []
    for index, event in enumerate(events):
        problem = event_problem(event, now)
        if problem is None:
            problem = _unknown_id(event, user_ids, place_ids)
        if problem is not None:
            problems.append(EventProblem(index, *problem))
            if len(problems) >= limit:
                break
    return problems


def _known(sorted_ids: np.ndarray, value: int) -> bool:
    at = int(np.searchsorted(sorted_ids, value))
    return at < len(sorted_ids) and int(sorted_ids[at]) == value


def _unknown_id(
    event: FeedbackEvent, user_ids: np.ndarray | None, place_ids: np.ndarray | None
) -> tuple[str, str] | None:
    if user_ids is not None:
        for name in ("user_id", "other_user_id"):
            value = getattr(event, name)
            if value is not None and not _known(user_ids, value):
                return name, f"unknown user {value} (not in the served version)"
    if place_ids is not None and event.place_id is not None and not _known(place_ids, event.place_id):
        return "place_id", f"unknown place {event.place_id} (not in the served version)"
    return None


# How events are stored once rolled out of the log: one row per event, `received_at` set by the
# service when it acknowledged the batch.
_TEXT: pa.DataType = pa.string()
EVENTS_SCHEMA = pa.schema(
    [
        ("type", _TEXT),
        ("user_id", I64),
        ("timestamp", TIMESTAMP),
        ("request_id", _TEXT),
        ("variant", _TEXT),
        ("place_id", I64),
        ("other_user_id", I64),
        ("position", I32),
        ("event_id", _TEXT),
        ("received_at", TIMESTAMP),
    ]
)


class LogRecord(msgspec.Struct, frozen=True):
    """One acknowledged batch as a line of the log: its events and when the service accepted them."""

    received_at: dt.datetime
    events: list[FeedbackEvent]


def events_table(records: Sequence[LogRecord]) -> pa.Table:
    """Acknowledged batches as one Arrow table of `EVENTS_SCHEMA`, a row per event."""
    fields = [name for name in EVENTS_SCHEMA.names if name != "received_at"]
    columns: dict[str, list[object]] = {name: [] for name in EVENTS_SCHEMA.names}
    for record in records:
        for event in record.events:
            for name in fields:
                columns[name].append(getattr(event, name))
        columns["received_at"].extend([record.received_at] * len(record.events))
    return pa.Table.from_pydict(columns, schema=EVENTS_SCHEMA)
