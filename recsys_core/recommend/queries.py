"""Requests the recommender answers, and the errors that name what is wrong with one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from recsys_core.recommend.limits import DEFAULT_TOP_K, MAX_TOP_K, MIN_TOP_K
from recsys_core.retrieval.index import RETRIEVAL_DEPTH
from recsys_core.vocabulary import Vocabulary

CANDIDATES = RETRIEVAL_DEPTH  # M: how many the ANN index retrieves before the heads re-rank


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

    @property
    def has_context(self) -> bool:
        """A time slot or wishes: what the place head re-ranks by."""
        return self.has_profile or self.time_slot is not None


@dataclass(frozen=True)
class PeopleQuery:
    user_id: int
    city_id: int | None = None
    target_place_id: int | None = None
    activity_tags: tuple[int, ...] = ()
    top_k: int = DEFAULT_TOP_K

    @property
    def has_context(self) -> bool:
        """A target place or activity tags: what attendance and tastes reorder by."""
        return self.target_place_id is not None or bool(self.activity_tags)


def check_top_k(top_k: int) -> None:
    if not MIN_TOP_K <= top_k <= MAX_TOP_K:
        raise RequestError("top_k", f"must be between {MIN_TOP_K} and {MAX_TOP_K}, got {top_k}")


def time_slot_help(vocabulary: Vocabulary) -> str:
    """The valid time slots as "0=morning, 1=afternoon, ..."."""
    return ", ".join(f"{i}={name}" for i, name in enumerate(vocabulary.time_slots)) or "none (no time slots)"


def check_time_slot(slot: int | None, vocabulary: Vocabulary) -> None:
    """A time slot must be one of the served vocabulary's (the HTTP schema only bounds it)."""
    if slot is not None and not 0 <= slot < len(vocabulary.time_slots):
        raise RequestError("time_slot", f"unknown time slot {slot}; valid: {time_slot_help(vocabulary)}")


def normalized(text: str) -> str:
    """How a requested name is compared: case and surrounding space do not matter, spaces are "_"."""
    return text.strip().lower().replace(" ", "_")


@lru_cache(maxsize=32)
def _name_ids(names: tuple[str, ...]) -> Mapping[str, int]:
    """Normalized name -> id, the first of any names that normalize alike (once per vocabulary)."""
    ids: dict[str, int] = {}
    for i, name in enumerate(names):
        ids.setdefault(normalized(name), i)
    return ids


def is_name(value: str, names: tuple[str, ...]) -> bool:
    return normalized(value) in _name_ids(names)


def _vocabulary_ids(field: str, values: Iterable[object], names: tuple[str, ...]) -> tuple[int, ...]:
    """Ids or names ("jazz", "live_music") -> sorted unique ids; anything else is named in the error."""
    ids: set[int] = set()
    unknown: list[object] = []
    by_name = _name_ids(names)
    for value in values:
        if isinstance(value, bool):
            unknown.append(value)
        elif isinstance(value, int):
            (ids.add(value) if 0 <= value < len(names) else unknown.append(value))
        else:
            text = normalized(str(value))
            if text.lstrip("-").isascii() and text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
                ids.add(int(text))
            elif text in by_name:
                ids.add(by_name[text])
            else:
                unknown.append(value)
    if unknown:
        valid = f"valid ids are 0..{len(names) - 1}" if names else "the served vocabulary has none"
        raise RequestError(field, f"unknown id(s) or name(s) {unknown}; {valid}")
    return tuple(sorted(ids))


def tag_ids(field: str, values: Iterable[object] | None, vocabulary: Vocabulary) -> tuple[int, ...]:
    """Tag ids or names of the served vocabulary -> sorted unique tag ids."""
    return _vocabulary_ids(field, values, vocabulary.tags) if values else ()


def category_ids(field: str, values: Iterable[object] | None, vocabulary: Vocabulary) -> tuple[int, ...]:
    """Category ids or names of the served vocabulary -> sorted unique category ids."""
    return _vocabulary_ids(field, values, vocabulary.categories) if values else ()
