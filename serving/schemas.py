"""Request and response bodies (msgspec Structs: validated on decode, fast to encode)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct

Id = Annotated[int, Meta(ge=0)]
TopK = Annotated[int, Meta(ge=1, le=100, description="1..100")]
VocabularyItem = int | str  # an id or a name ("jazz", "live_music")


class PlaceRequest(Struct, forbid_unknown_fields=True):
    user_id: Id
    city_id: int | None = None
    time_slot: int | None = msgspec.field(default=None)
    desired_categories: list[VocabularyItem] = []
    desired_tags: list[VocabularyItem] = []
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
    city_id: int | None = None
    target_place_id: int | None = None
    activity_tags: list[VocabularyItem] = []
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
