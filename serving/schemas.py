"""Request and response bodies (msgspec Structs: validated on decode, fast to encode)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from recsys_core.taxonomy import N_TIME_SLOTS, TIME_SLOTS

# Ids are int64 in the tables, but no larger than the largest integer every JSON client holds
# exactly (a JavaScript number); bigger values are a 400 naming the field, not an overflow.
MAX_ID = 2**53 - 1
MAX_LIST_ITEMS = 100  # as many as there are fine tags
MAX_NAME_CHARS = 64

Id = Annotated[int, Meta(ge=0, le=MAX_ID)]
# Litestar 2 drops a `minimum` of 0 from optional fields in the OpenAPI schema; restated here.
OptionalId = Annotated[int, Meta(ge=0, le=MAX_ID, extra_json_schema={"extra": {"minimum": 0}})] | None
TopK = Annotated[int, Meta(ge=1, le=100, description="1..100")]
TimeSlot = Annotated[int, Meta(ge=0, le=N_TIME_SLOTS - 1, extra_json_schema={
    "description": ", ".join(f"{i}={n}" for i, n in enumerate(TIME_SLOTS)), "extra": {"minimum": 0}})]
# an id or a name ("jazz", "live_music"; case and spaces do not matter)
VocabularyItem = Id | Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS)]
Vocabulary = Annotated[list[VocabularyItem], Meta(max_length=MAX_LIST_ITEMS, description=f"ids or names, at most {MAX_LIST_ITEMS}")]


class PlaceRequest(Struct, forbid_unknown_fields=True):
    user_id: Id
    city_id: OptionalId = None
    time_slot: TimeSlot | None = None
    desired_categories: Vocabulary = []
    desired_tags: Vocabulary = []
    top_k: TopK = 10


class PlaceItem(Struct):
    place_id: int
    name: str | None
    score: float
    explanations: list[str]


class PlaceResponse(Struct):
    recommendations: list[PlaceItem]
    model_version: str


class PeopleRequest(Struct, forbid_unknown_fields=True):
    user_id: Id
    city_id: OptionalId = None
    target_place_id: OptionalId = None
    activity_tags: Vocabulary = []
    top_k: TopK = 10


class PersonItem(Struct):
    user_id: int
    compat_score: float
    attend_prob: float
    combined_score: float
    explanations: list[str]


class PeopleResponse(Struct):
    recommendations: list[PersonItem]
    model_version: str


class Health(Struct):
    status: str


class Ready(Struct):
    ready: bool
    version: str | None
    detail: str | None = None


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
