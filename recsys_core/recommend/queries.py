"""Requests the recommender answers, and the errors that name what is wrong with one."""

from __future__ import annotations

from dataclasses import dataclass

from recsys_core.taxonomy import C_COARSE, C_FINE, COARSE_CATEGORIES, FINE_TAGS, N_TIME_SLOTS, TIME_SLOTS

MAX_TOP_K = 100
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
    top_k: int = 10

    @property
    def has_profile(self) -> bool:
        return bool(self.desired_categories or self.desired_tags)


@dataclass(frozen=True)
class PeopleQuery:
    user_id: int
    city_id: int | None = None
    target_place_id: int | None = None
    activity_tags: tuple[int, ...] = ()
    top_k: int = 10


def check_top_k(top_k: int) -> None:
    if not 1 <= top_k <= MAX_TOP_K:
        raise RequestError("top_k", f"must be between 1 and {MAX_TOP_K}, got {top_k}")


def check_time_slot(slot: int | None) -> None:
    if slot is not None and not 0 <= slot < N_TIME_SLOTS:
        raise RequestError("time_slot", f"unknown time slot {slot}; valid: " + ", ".join(f"{i}={n}" for i, n in enumerate(TIME_SLOTS)))


def _vocabulary_ids(field: str, values, names: tuple[str, ...]) -> tuple[int, ...]:
    """Ids or names ("jazz", "live_music") -> sorted unique ids; anything else is named in the error."""
    ids, unknown = set(), []
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


def tag_ids(field: str, values) -> tuple[int, ...]:
    return _vocabulary_ids(field, values, FINE_TAGS) if values else ()


def category_ids(field: str, values) -> tuple[int, ...]:
    return _vocabulary_ids(field, values, COARSE_CATEGORIES) if values else ()


assert len(FINE_TAGS) == C_FINE and len(COARSE_CATEGORIES) == C_COARSE
