"""Requests the recommender answers, and the errors that name what is wrong with one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from recsys_core.recommend.limits import DEFAULT_TOP_K, MAX_TIME_SLOT, MAX_TOP_K, MIN_TOP_K, TIME_SLOT_HELP
from recsys_core.taxonomy import C_COARSE, C_FINE, COARSE_CATEGORIES, FINE_TAGS

CANDIDATES = 200  # M: how many the ANN index retrieves before the heads re-rank


class RequestError(ValueError):
    """A client mistake: `field` names the offending field (HTTP 400)."""

    status = 400

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(RequestError):
    """An id that does not exist (HTTP 404)."""

    status = 404


@dataclass(frozen=True)
class PlaceQuery:
    user_id: int
    city_id: int | None = None
    time_slot: int | None = None
    desired_categories: tuple[int, ...] = ()
    desired_tags: tuple[int, ...] = ()
    top_k: int = DEFAULT_TOP_K

    @property
    def has_profile(self) -> bool:
        return bool(self.desired_categories or self.desired_tags)


@dataclass(frozen=True)
class PeopleQuery:
    user_id: int
    city_id: int | None = None
    target_place_id: int | None = None
    activity_tags: tuple[int, ...] = ()
    top_k: int = DEFAULT_TOP_K


def check_top_k(top_k: int) -> None:
    if not MIN_TOP_K <= top_k <= MAX_TOP_K:
        raise RequestError("top_k", f"must be between {MIN_TOP_K} and {MAX_TOP_K}, got {top_k}")


def check_time_slot(slot: int | None) -> None:
    if slot is not None and not 0 <= slot <= MAX_TIME_SLOT:
        raise RequestError("time_slot", f"unknown time slot {slot}; valid: {TIME_SLOT_HELP}")


def _vocabulary_ids(field: str, values: Iterable[object], names: tuple[str, ...]) -> tuple[int, ...]:
    """Ids or names ("jazz", "live_music") -> sorted unique ids; anything else is named in the error."""
    ids: set[int] = set()
    unknown: list[object] = []
    for value in values:
        if isinstance(value, bool):
            unknown.append(value)
        elif isinstance(value, int):
            (ids.add(value) if 0 <= value < len(names) else unknown.append(value))
        else:
            text = str(value).strip().lower().replace(" ", "_")
            if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
                ids.add(int(text))
            elif text in names:
                ids.add(names.index(text))
            else:
                unknown.append(value)
    if unknown:
        raise RequestError(field, f"unknown id(s) or name(s) {unknown}; valid ids are 0..{len(names) - 1}")
    return tuple(sorted(ids))


def tag_ids(field: str, values: Iterable[object] | None) -> tuple[int, ...]:
    return _vocabulary_ids(field, values, FINE_TAGS) if values else ()


def category_ids(field: str, values: Iterable[object] | None) -> tuple[int, ...]:
    return _vocabulary_ids(field, values, COARSE_CATEGORIES) if values else ()


if len(FINE_TAGS) != C_FINE or len(COARSE_CATEGORIES) != C_COARSE:
    raise RuntimeError(
        f"the taxonomy's vocabularies do not match its sizes: {len(FINE_TAGS)} fine tags for C_FINE={C_FINE}, "
        f"{len(COARSE_CATEGORIES)} categories for C_COARSE={C_COARSE}"
    )
