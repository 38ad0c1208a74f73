"""HTTP endpoints: place and people recommendations (GET and POST), health, readiness, version,
and the token-protected admin reload."""

from __future__ import annotations

import hmac
import os
import re
import uuid
from typing import Annotated

from litestar import Controller, Response, get, post, route
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT, HTTP_503_SERVICE_UNAVAILABLE

from recsys_core.feedback.releases import ReleaseError, ServingDirectory
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
from recsys_core.recommend.people import recommend_people
from recsys_core.recommend.places import recommend_places
from recsys_core.recommend.queries import (
    PeopleQuery,
    PlaceQuery,
    RequestError,
    category_ids,
    check_time_slot,
    is_name,
    tag_ids,
)
from serving.routing import Routed, Router
from serving.schemas import (
    ErrorBody,
    ExperimentInfo,
    Health,
    PeopleRequest,
    PeopleResponse,
    PersonItem,
    PinInfo,
    PlaceItem,
    PlaceRequest,
    PlaceResponse,
    Ready,
    ReloadResult,
    VersionInfo,
)
from serving.state import ArtifactHolder, Served

LIST_HELP = f"ids or names; repeat the parameter or separate with commas; at most {MAX_LIST_ITEMS} in all"
UserId = Annotated[int, QueryParameter(ge=0, le=MAX_ID)]
# schema_extra: Litestar 2 drops a `minimum` of 0 from optional parameters in the OpenAPI schema
OptionalId = Annotated[int | None, QueryParameter(ge=0, le=MAX_ID, schema_extra={"minimum": 0})]
TimeSlot = Annotated[
    int | None,
    QueryParameter(ge=0, le=MAX_TIME_SLOT, description=TIME_SLOT_HELP, schema_extra={"minimum": 0}),
]
TopK = Annotated[int, QueryParameter(ge=MIN_TOP_K, le=MAX_TOP_K, description=TOP_K_HELP)]
Vocabulary = Annotated[list[str] | None, QueryParameter(description=LIST_HELP, max_items=MAX_LIST_ITEMS)]
Current = NamedDependency[Served]
Holder = NamedDependency[ArtifactHolder]
Routes = NamedDependency[Router]
# What a vocabulary value may look like before it is looked up: an id, or a name in any case with
# spaces for underscores. Anything else (other scripts, control characters, punctuation) is
# rejected here with a message saying so, rather than reported as an unknown name, unless it is
# a name of the served vocabulary (one with digits or hyphens, say).
_VOCABULARY_TEXT = re.compile(rf"-?[0-9]{{1,19}}|[A-Za-z_ ]{{1,{MAX_NAME_CHARS}}}")


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses an endpoint can answer with (all `ErrorBody`)."""
    what = {
        400: "A client mistake: a missing, malformed or out-of-range field, or an unknown name; `field` names it",
        401: "Missing or wrong admin token",
        403: "Admin endpoints are disabled (no RECSYS_ADMIN_TOKEN configured)",
        404: "An unknown user or place; `field` names it",
        413: "Request body larger than RECSYS_MAX_BODY_BYTES",
        414: "Path and query string longer than RECSYS_MAX_URL_BYTES",
        429: "Too many events waiting for the disk; retry after the Retry-After header's seconds",
        503: "Artifacts not loaded yet, or (events) the log cannot write",
    }
    return {code: ResponseSpec(ErrorBody, description=what[code], generate_examples=False) for code in codes}


READ_ERRORS = errors(400, 404, 414, 503)
BODY_ERRORS = errors(400, 404, 413, 414, 503)


def _split(field: str, values: list[str] | None) -> list[int | str]:
    """`?tags=jazz,techno&tags=3` -> ["jazz", "techno", "3"]."""
    parts: list[int | str] = [part for value in values or [] for part in value.split(",") if part.strip()]
    if len(parts) > MAX_LIST_ITEMS:
        raise RequestError(field, f"at most {MAX_LIST_ITEMS} values, got {len(parts)}")
    return parts


def _vocabulary(field: str, values: list[int | str], names: tuple[str, ...]) -> list[int | str]:
    """`values` unchanged, once each string looks like an id or a name (`names`: the served vocabulary's)."""
    for value in values:
        if isinstance(value, str) and not _VOCABULARY_TEXT.fullmatch(value.strip()) and not is_name(value, names):
            example = f", e.g. {names[0]!r}" if names else ""
            raise RequestError(
                field,
                f"{value[:MAX_NAME_CHARS]!r} is neither an id (0..{len(names) - 1}) nor a name: "
                f"names are ASCII letters and underscores{example}",
            )
    return values


def served(holder: ArtifactHolder) -> Served:
    current = holder.current
    if current is None:
        raise HTTPException(
            status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=f"not ready: {holder.last_error or 'loading artifacts'}"
        )
    return current


def _places(routed: Routed, body: PlaceRequest) -> PlaceResponse:
    art = routed.served.artifacts
    vocabulary = art.vocabulary
    # The schema bounds the slot; which slots exist is the served vocabulary's, checked first as
    # the schema's check would be.
    check_time_slot(body.time_slot, vocabulary)
    categories = _vocabulary("desired_categories", body.desired_categories, vocabulary.categories)
    category_list = category_ids("desired_categories", categories, vocabulary)
    tags = tag_ids("desired_tags", _vocabulary("desired_tags", body.desired_tags, vocabulary.tags), vocabulary)
    query = PlaceQuery(
        user_id=body.user_id,
        city_id=body.city_id,
        time_slot=body.time_slot,
        desired_categories=category_list,
        desired_tags=tags,
        top_k=body.top_k,
    )
    items = [PlaceItem(r.place_id, r.name, r.score, r.explanations) for r in recommend_places(art, query)]
    return PlaceResponse(items, art.model_version, new_request_id(), routed.variant)


def _people(routed: Routed, body: PeopleRequest) -> PeopleResponse:
    art = routed.served.artifacts
    query = PeopleQuery(
        user_id=body.user_id,
        city_id=body.city_id,
        target_place_id=body.target_place_id,
        activity_tags=tag_ids(
            "activity_tags", _vocabulary("activity_tags", body.activity_tags, art.vocabulary.tags), art.vocabulary
        ),
        top_k=body.top_k,
    )
    items = [
        PersonItem(r.user_id, r.compat_score, r.attend_prob, r.combined_score, r.explanations)
        for r in recommend_people(art, query)
    ]
    return PeopleResponse(items, art.model_version, new_request_id(), routed.variant)


def new_request_id() -> str:
    """Unique per response (random, not derived from the request: two identical requests are two
    impressions)."""
    return uuid.uuid4().hex


class GetAndPost(Controller):
    """A resource answering GET and POST. Litestar 2's automatic OPTIONS handler lists only the
    first handler's method in `Allow` when a path has several (litestar#4169, fixed in 3.x)."""

    @route(
        http_method=HttpMethod.OPTIONS, include_in_schema=False, sync_to_thread=False, status_code=HTTP_204_NO_CONTENT
    )
    def options(self) -> Response[None]:
        return Response(None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": "GET, OPTIONS, POST"})


class PlacesController(GetAndPost):
    path = "/recommend/places"
    tags = ["recommendations"]

    @get(
        sync_to_thread=False,
        summary="Places a user will like, re-ranked for the request context",
        responses=READ_ERRORS,
    )
    def get_places(
        self,
        serving: Current,
        router: Routes,
        user_id: UserId,
        city_id: OptionalId = None,
        time_slot: TimeSlot = None,
        desired_categories: Vocabulary = None,
        desired_tags: Vocabulary = None,
        top_k: TopK = DEFAULT_TOP_K,
    ) -> PlaceResponse:
        body = PlaceRequest(
            user_id,
            city_id,
            time_slot,
            _split("desired_categories", desired_categories),
            _split("desired_tags", desired_tags),
            top_k,
        )
        return _places(router.route(user_id, serving), body)

    @post(sync_to_thread=False, status_code=200, summary="Same as GET, fields as a JSON body", responses=BODY_ERRORS)
    def post_places(self, serving: Current, router: Routes, data: JSONBody[PlaceRequest]) -> PlaceResponse:
        return _places(router.route(data.user_id, serving), data)


class PeopleController(GetAndPost):
    path = "/recommend/people"
    tags = ["recommendations"]

    @get(
        sync_to_thread=False,
        summary="People a user would get along with / who would come along to a place",
        responses=READ_ERRORS,
    )
    def get_people(
        self,
        serving: Current,
        router: Routes,
        user_id: UserId,
        city_id: OptionalId = None,
        target_place_id: OptionalId = None,
        activity_tags: Vocabulary = None,
        top_k: TopK = DEFAULT_TOP_K,
    ) -> PeopleResponse:
        return _people(
            router.route(user_id, serving),
            PeopleRequest(user_id, city_id, target_place_id, _split("activity_tags", activity_tags), top_k),
        )

    @post(sync_to_thread=False, status_code=200, summary="Same as GET, fields as a JSON body", responses=BODY_ERRORS)
    def post_people(self, serving: Current, router: Routes, data: JSONBody[PeopleRequest]) -> PeopleResponse:
        return _people(router.route(data.user_id, serving), data)


class OpsController(Controller):
    tags = ["operations"]

    @get("/health", sync_to_thread=False, summary="Liveness", responses=errors(414))
    def health(self) -> Health:
        return Health("ok")

    @get(
        "/ready", sync_to_thread=False, summary="200 once artifacts are loaded, 503 before", responses=errors(414, 503)
    )
    def ready(self, holder: Holder) -> Ready:
        # 503 until loaded; once serving, `detail` names a newer manifest that was refused
        return Ready(True, served(holder).artifacts.manifest.version, detail=holder.last_error)

    @get("/version", sync_to_thread=False, summary="The manifest being served", responses=errors(414, 503))
    def version(self, serving: Current, holder: Holder, router: Routes) -> VersionInfo:
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
            artifacts={
                "model": m.model.path,
                "graph": m.graph.path,
                "user_embeddings": m.user_embeddings.path,
                "place_embeddings": m.place_embeddings.path,
                **({"place_model": m.place_model.path} if m.place_model else {}),
            },
            worker_pid=os.getpid(),
            experiment=_experiment_info(router),
            experiment_error=router.experiment.last_error,
            pinned=_pin_info(holder),
        )


def _pin_info(holder: ArtifactHolder) -> PinInfo | None:
    try:
        pin = ServingDirectory(holder.manifest_path.parent).pin()
    except ReleaseError as exc:
        return PinInfo(version="?", reason=str(exc))
    return PinInfo(pin.version, pin.reason) if pin else None


def _experiment_info(router: Router) -> ExperimentInfo | None:
    experiment = router.experiment.current
    if experiment is None:
        return None
    candidate = router.candidate.current
    manifest = candidate.artifacts.manifest if candidate else None
    return ExperimentInfo(
        name=experiment.name,
        candidate_share=experiment.candidate_share,
        enabled=experiment.enabled,
        started_at=experiment.started_at,
        candidate_version=manifest.version if manifest else None,
        candidate_model_version=manifest.model_version if manifest else None,
        candidate_last_reload_error=router.candidate.last_error,
    )


def admin_token_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """`Authorization: Bearer <RECSYS_ADMIN_TOKEN>`; without a configured token admin is off."""
    token = connection.app.state.settings.admin_token
    if token is None:
        raise PermissionDeniedException("admin endpoints are disabled: set RECSYS_ADMIN_TOKEN to enable them")
    scheme, _sep, given = connection.headers.get("authorization", "").partition(" ")
    # Bytes, so a token of any characters compares in constant time (str needs ASCII).
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise NotAuthorizedException(
            "missing or wrong admin token: send Authorization: Bearer <RECSYS_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


class AdminController(Controller):
    path = "/admin"
    tags = ["operations"]
    guards = [admin_token_guard]
    security = [{"adminToken": []}]

    @post(
        "/reload",
        status_code=200,
        summary="Check for a new serving manifest now (also retries one that failed)",
        responses=errors(401, 403, 414),
    )
    async def reload(self, holder: Holder) -> ReloadResult:
        reloaded = await holder.reload(force=True)
        current = holder.current
        manifest = current.artifacts.manifest if current else None
        return ReloadResult(
            reloaded=reloaded,
            version=manifest.version if manifest else None,
            model_version=manifest.model_version if manifest else None,
            reloads=holder.reloads,
            last_reload_error=holder.last_error,
        )
