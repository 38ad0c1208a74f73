"""Request and response bodies (msgspec Structs: validated on decode, fast to encode)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from recsys_core.feedback.events import MAX_EVENTS_PER_BATCH, FeedbackEvent
from recsys_core.recommend.limits import (
    DEFAULT_TOP_K,
    MAX_ID,
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    MAX_TIME_SLOT,
    MAX_TOP_K,
    MIN_TOP_K,
    TIME_SLOT_HELP,
    TOP_K_HELP,
)

Id = Annotated[int, Meta(ge=0, le=MAX_ID)]
# Litestar 2 drops a `minimum` of 0 from optional fields in the OpenAPI schema; restated here.
OptionalId = Annotated[int, Meta(ge=0, le=MAX_ID, extra_json_schema={"extra": {"minimum": 0}})] | None
TopK = Annotated[int, Meta(ge=MIN_TOP_K, le=MAX_TOP_K, description=TOP_K_HELP)]
TimeSlot = Annotated[
    int,
    Meta(
        ge=0,
        le=MAX_TIME_SLOT,
        extra_json_schema={
            "description": TIME_SLOT_HELP,
            "extra": {"minimum": 0},
        },
    ),
]
# an id or a name ("jazz", "live_music"; case and spaces do not matter)
VocabularyItem = Id | Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS)]
Vocabulary = Annotated[
    list[VocabularyItem], Meta(max_length=MAX_LIST_ITEMS, description=f"ids or names, at most {MAX_LIST_ITEMS}")
]


class PlaceRequest(Struct, forbid_unknown_fields=True):
    user_id: Id
    city_id: OptionalId = None
    time_slot: TimeSlot | None = None
    desired_categories: Vocabulary = []
    desired_tags: Vocabulary = []
    top_k: TopK = DEFAULT_TOP_K


class PlaceItem(Struct):
    place_id: int
    name: str | None
    score: float
    explanations: list[str]


class PlaceResponse(Struct):
    recommendations: list[PlaceItem]
    model_version: str
    request_id: str  # quote it, with `variant`, in the feedback events about this response
    variant: str  # the manifest version that answered (live, or the experiment's candidate)


class PeopleRequest(Struct, forbid_unknown_fields=True):
    user_id: Id
    city_id: OptionalId = None
    target_place_id: OptionalId = None
    activity_tags: Vocabulary = []
    top_k: TopK = DEFAULT_TOP_K


class PersonItem(Struct):
    user_id: int
    compat_score: float
    attend_prob: float
    combined_score: float
    explanations: list[str]


class PeopleResponse(Struct):
    recommendations: list[PersonItem]
    model_version: str
    request_id: str  # quote it, with `variant`, in the feedback events about this response
    variant: str  # the manifest version that answered (live, or the experiment's candidate)


class Health(Struct):
    status: str


class Ready(Struct):
    ready: bool
    version: str | None
    detail: str | None = None


class ExperimentInfo(Struct):
    name: str
    candidate_share: float
    enabled: bool
    started_at: str
    candidate_version: str | None  # None: no candidate loaded, so everyone is on live
    candidate_model_version: str | None
    candidate_last_reload_error: str | None


class PinInfo(Struct):
    version: str
    reason: str


class VersionInfo(Struct):
    version: str
    model_version: str
    created_at: str
    loaded_at: str
    load_seconds: float
    manifest_path: str
    reloads: int
    last_reload_error: str | None
    artifacts: dict[str, str]
    worker_pid: int  # which worker process answered (`recsys serve --workers N` runs several)
    experiment: ExperimentInfo | None = None
    experiment_error: str | None = None  # an experiment file that could not be used (experiment off)
    pinned: PinInfo | None = None  # live is pinned to this version (`recsys publish --pin`): nothing replaces it


class EventBatch(Struct, forbid_unknown_fields=True):
    events: Annotated[list[FeedbackEvent], Meta(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]


class EventsAccepted(Struct):
    accepted: int  # events now on disk


class ErrorBody(Struct):
    """Every 4xx/5xx: what is wrong, and the request field it is about (when there is one)."""

    status_code: int
    detail: str
    field: str | None = None


class ReloadResult(Struct):
    reloaded: bool
    version: str | None
    model_version: str | None
    reloads: int
    last_reload_error: str | None
