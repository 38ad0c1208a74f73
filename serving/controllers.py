"""HTTP endpoints: place and people recommendations (GET and POST), health, readiness, version."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.people import recommend_people
from recsys_core.recommend.places import recommend_places
from recsys_core.recommend.queries import PeopleQuery, PlaceQuery, category_ids, tag_ids
from serving.schemas import (
    Health,
    PeopleRequest,
    PeopleResponse,
    PersonItem,
    PlaceItem,
    PlaceRequest,
    PlaceResponse,
    Ready,
    VersionInfo,
)
from serving.state import ArtifactHolder, Served

LIST_HELP = "ids or names; repeat the parameter or separate with commas"
UserId = Annotated[int, QueryParameter(ge=0)]
TopK = Annotated[int, QueryParameter(ge=1, le=100, description="1..100")]
Vocabulary = Annotated[list[str] | None, QueryParameter(description=LIST_HELP)]
Current = NamedDependency[Served]
Holder = NamedDependency[ArtifactHolder]


def _split(values: list[str] | None) -> list[str]:
    """`?tags=jazz,techno&tags=3` -> ["jazz", "techno", "3"]."""
    return [part for value in values or [] for part in value.split(",") if part.strip()]


def served(holder: ArtifactHolder) -> Served:
    current = holder.current
    if current is None:
        raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=f"not ready: {holder.last_error or 'loading artifacts'}")
    return current


def _places(art: ServingArtifacts, body: PlaceRequest) -> PlaceResponse:
    query = PlaceQuery(
        user_id=body.user_id,
        city_id=body.city_id,
        time_slot=body.time_slot,
        desired_categories=category_ids("desired_categories", body.desired_categories),
        desired_tags=tag_ids("desired_tags", body.desired_tags),
        top_k=body.top_k,
    )
    items = [PlaceItem(r.place_id, r.name, r.score, r.explanations) for r in recommend_places(art, query)]
    return PlaceResponse(items, art.model_version)


def _people(art: ServingArtifacts, body: PeopleRequest) -> PeopleResponse:
    query = PeopleQuery(
        user_id=body.user_id,
        city_id=body.city_id,
        target_place_id=body.target_place_id,
        activity_tags=tag_ids("activity_tags", body.activity_tags),
        top_k=body.top_k,
    )
    items = [PersonItem(r.user_id, r.compat_score, r.attend_prob, r.combined_score, r.explanations) for r in recommend_people(art, query)]
    return PeopleResponse(items, art.model_version)


class PlacesController(Controller):
    path = "/recommend/places"
    tags = ["recommendations"]

    @get(sync_to_thread=False, summary="Places a user will like, re-ranked for the request context")
    def get_places(
        self,
        serving: Current,
        user_id: UserId,
        city_id: FromQuery[int | None] = None,
        time_slot: Annotated[int | None, QueryParameter(description="0..5: morning .. weekend_night")] = None,
        desired_categories: Vocabulary = None,
        desired_tags: Vocabulary = None,
        top_k: TopK = 10,
    ) -> PlaceResponse:
        body = PlaceRequest(user_id, city_id, time_slot, _split(desired_categories), _split(desired_tags), top_k)
        return _places(serving.artifacts, body)

    @post(sync_to_thread=False, status_code=200, summary="Same as GET, fields as a JSON body")
    def post_places(self, serving: Current, data: JSONBody[PlaceRequest]) -> PlaceResponse:
        return _places(serving.artifacts, data)


class PeopleController(Controller):
    path = "/recommend/people"
    tags = ["recommendations"]

    @get(sync_to_thread=False, summary="People a user would get along with / who would come along to a place")
    def get_people(
        self,
        serving: Current,
        user_id: UserId,
        city_id: FromQuery[int | None] = None,
        target_place_id: FromQuery[int | None] = None,
        activity_tags: Vocabulary = None,
        top_k: TopK = 10,
    ) -> PeopleResponse:
        return _people(serving.artifacts, PeopleRequest(user_id, city_id, target_place_id, _split(activity_tags), top_k))

    @post(sync_to_thread=False, status_code=200, summary="Same as GET, fields as a JSON body")
    def post_people(self, serving: Current, data: JSONBody[PeopleRequest]) -> PeopleResponse:
        return _people(serving.artifacts, data)


class OpsController(Controller):
    tags = ["operations"]

    @get("/health", sync_to_thread=False, summary="Liveness")
    def health(self) -> Health:
        return Health("ok")

    @get("/ready", sync_to_thread=False, summary="200 once artifacts are loaded, 503 before")
    def ready(self, holder: Holder) -> Ready:
        return Ready(True, served(holder).artifacts.manifest.version)  # 503 until loaded

    @get("/version", sync_to_thread=False, summary="The manifest being served")
    def version(self, serving: Current, holder: Holder) -> VersionInfo:
        m = serving.artifacts.manifest
        return VersionInfo(
            version=m.version,
            model_version=m.model_version,
            created_at=m.created_at,
            loaded_at=serving.loaded_at,
            load_seconds=round(serving.artifacts.loaded_in_s, 2),
            manifest_path=str(holder.manifest_path),
            reloads=holder.reloads,
            last_reload_error=holder.last_error,
            artifacts={"model": m.model.path, "graph": m.graph.path, "user_embeddings": m.user_embeddings.path,
                       "place_embeddings": m.place_embeddings.path},
        )
