"""A world's vocabulary: the names behind its ids, as data that comes with the world.

Cities, the neighbourhoods of each city, categories, tags (each with its category, or none),
vibes, time slots and price bands. An id is a position in these lists, so the tables, the
feature layouts, the model's widths, the explanations and the request parser all agree on what
id 3 means as long as they are given the same vocabulary. The synthetic world's vocabulary is
the built-in taxonomy (`BUILTIN`); any other source brings its own (`Vocabulary.from_dict`).

How an interaction's time-of-day bucket (4) and weekday/weekend bucket (2) map to a time slot
is part of the vocabulary too (`slot_of_bucket`), since the slots are.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from recsys_core import taxonomy
from recsys_core.files import READABLE_BY_ALL, write_text_atomically

N_TIME_OF_DAY_BUCKETS = 4  # the interactions contract: morning, afternoon, evening, night
N_DAY_OF_WEEK_BUCKETS = 2  # weekday, weekend
NO_CATEGORY = -1  # a tag that belongs to no category
VOCABULARY_FILE = "vocabulary.json"
_SLUG_CHARS = re.compile(r"[^a-z0-9_]+")


class VocabularyError(ValueError):
    """A vocabulary that cannot describe a world; the message lists every problem."""


def slug(name: str) -> str:
    """A name as a partition key or lookup key: lower case, spaces and punctuation as "_"."""
    return _SLUG_CHARS.sub("_", name.strip().lower()).strip("_")


def _names(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise VocabularyError(f"{what} must be a list of names, got {type(value).__name__}")
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class Vocabulary:
    cities: tuple[str, ...]
    neighborhoods: tuple[tuple[str, ...], ...] = ()  # per city; () for a city without any
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tag_category: tuple[int, ...] = ()  # per tag: its category's id, or NO_CATEGORY
    vibes: tuple[str, ...] = ()
    time_slots: tuple[str, ...] = ()
    # slot_of_bucket[time_of_day][day_of_week]: the time slot of an interaction's buckets
    slot_of_bucket: tuple[tuple[int, ...], ...] = ()
    price_bands: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.neighborhoods:
            object.__setattr__(self, "neighborhoods", tuple(() for _ in self.cities))
        problems = self.problems()
        if problems:
            raise VocabularyError("invalid vocabulary: " + "; ".join(problems))

    # ------------------------------------------------------------------ checks

    def problems(self) -> list[str]:
        """Everything that is wrong, named (empty when the vocabulary is usable)."""
        problems: list[str] = []
        if not self.cities:
            problems.append("a world needs at least one city")
        for what, names in (
            ("cities", self.cities),
            ("categories", self.categories),
            ("tags", self.tags),
            ("vibes", self.vibes),
            ("time_slots", self.time_slots),
            ("price_bands", self.price_bands),
        ):
            problems.extend(_duplicates(what, names))
        city_slugs = [slug(c) for c in self.cities]
        if any(not s for s in city_slugs):
            problems.append("city names need at least one letter or digit")
        problems.extend(_duplicates("city slugs", city_slugs))
        if len(self.neighborhoods) != len(self.cities):
            problems.append(f"{len(self.neighborhoods)} neighbourhood lists for {len(self.cities)} cities")
        for city, names in zip(self.cities, self.neighborhoods, strict=False):
            problems.extend(_duplicates(f"neighbourhoods of {city}", names))
        if len(self.tag_category) != len(self.tags):
            problems.append(f"{len(self.tag_category)} tag categories for {len(self.tags)} tags")
        bad = [
            t for t, c in zip(self.tags, self.tag_category, strict=False) if not NO_CATEGORY <= c < len(self.categories)
        ]
        if bad:
            problems.append(f"tags with an unknown category: {bad[:10]}")
        if self.slot_of_bucket:
            shape = (len(self.slot_of_bucket), {len(row) for row in self.slot_of_bucket})
            if shape != (N_TIME_OF_DAY_BUCKETS, {N_DAY_OF_WEEK_BUCKETS}):
                problems.append(f"slot_of_bucket must be {N_TIME_OF_DAY_BUCKETS} rows of {N_DAY_OF_WEEK_BUCKETS} slots")
            elif any(not 0 <= s < len(self.time_slots) for row in self.slot_of_bucket for s in row):
                problems.append(f"slot_of_bucket names a slot outside 0..{len(self.time_slots) - 1}")
        elif self.time_slots:
            problems.append("time slots need slot_of_bucket (which slot each time-of-day/weekday bucket is)")
        return problems

    # ------------------------------------------------------------------ lookups

    @cached_property
    def city_slugs(self) -> tuple[str, ...]:
        """Partition keys, one per city ("london", "new_york")."""
        return tuple(slug(c) for c in self.cities)

    @property
    def n_cities(self) -> int:
        return len(self.cities)

    @property
    def n_neighborhoods(self) -> int:
        """Slots per city in the features: the most neighbourhoods any city has (at least 1)."""
        return max((len(n) for n in self.neighborhoods), default=0) or 1

    def city_id(self, city_slug: str) -> int:
        try:
            return self.city_slugs.index(city_slug)
        except ValueError:
            known = ", ".join(self.city_slugs[:20]) + (" ..." if self.n_cities > 20 else "")
            raise ValueError(f"unknown city {city_slug!r}; known: {known}") from None

    def neighborhood_name(self, city_id: int, neighborhood_id: int) -> str | None:
        names = self.neighborhoods[city_id] if 0 <= city_id < self.n_cities else ()
        return names[neighborhood_id] if 0 <= neighborhood_id < len(names) else None

    def tags_of_category(self, category_id: int) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.tag_category) if c == category_id)

    def time_slot_of(self, time_of_day_bucket: int, day_of_week_bucket: int) -> int:
        return self.slot_of_bucket[time_of_day_bucket][day_of_week_bucket]

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        return {
            "cities": list(self.cities),
            "neighborhoods": {city: list(names) for city, names in zip(self.cities, self.neighborhoods, strict=True)},
            "categories": list(self.categories),
            "tags": [
                {"name": t, "category": self.categories[c] if c != NO_CATEGORY else None}
                for t, c in zip(self.tags, self.tag_category, strict=True)
            ],
            "vibes": list(self.vibes),
            "time_slots": list(self.time_slots),
            "slot_of_bucket": [list(row) for row in self.slot_of_bucket],
            "price_bands": list(self.price_bands),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Vocabulary:
        """The file form: every list optional but `cities`; tags as names or {"name", "category"}."""
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise VocabularyError(f"unknown vocabulary fields {unknown}")
        if "cities" not in raw:
            raise VocabularyError("a vocabulary needs `cities`")
        cities = _names(raw["cities"], "cities")
        categories = _names(raw.get("categories", []), "categories")
        tags, tag_category = _tags(raw.get("tags", []), categories)
        by_city = raw.get("neighborhoods", {})
        if not isinstance(by_city, Mapping):
            raise VocabularyError("neighborhoods must map each city to its list of names")
        strays = sorted(set(map(str, by_city)) - set(cities))
        if strays:
            raise VocabularyError(f"neighborhoods of unknown cities {strays}")
        time_slots = _names(raw.get("time_slots", []), "time_slots")
        slots = raw.get("slot_of_bucket", [])
        if not isinstance(slots, Sequence):
            raise VocabularyError("slot_of_bucket must be a list of lists of slot ids")
        return cls(
            cities=cities,
            neighborhoods=tuple(_names(by_city.get(c, []), f"neighborhoods of {c}") for c in cities),
            categories=categories,
            tags=tags,
            tag_category=tag_category,
            vibes=_names(raw.get("vibes", []), "vibes"),
            time_slots=time_slots,
            slot_of_bucket=tuple(tuple(int(s) for s in row) for row in slots),
            price_bands=_names(raw.get("price_bands", []), "price_bands"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"vocabulary is not valid JSON: {exc}") from None
        if not isinstance(raw, Mapping):
            raise VocabularyError("a vocabulary file holds one JSON object")
        return cls.from_dict(raw)

    def save(self, directory: Path) -> Path:
        """`directory/vocabulary.json`, written atomically."""
        return write_text_atomically(Path(directory) / VOCABULARY_FILE, self.to_json() + "\n", mode=READABLE_BY_ALL)

    @classmethod
    def load(cls, directory: Path) -> Vocabulary:
        return cls.from_json((Path(directory) / VOCABULARY_FILE).read_text())


def _duplicates(what: str, names: Sequence[str]) -> list[str]:
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    return [f"duplicate {what}: {repeated[:10]}"] if repeated else []


def _tags(value: object, categories: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise VocabularyError("tags must be a list of names or of {name, category} objects")
    names, cats = [], []
    for i, tag in enumerate(value):
        if isinstance(tag, Mapping):
            name, category = tag.get("name"), tag.get("category")
        else:
            name, category = tag, None
        if not isinstance(name, str) or not name:
            raise VocabularyError(f"tag {i} has no name")
        if category is not None and category not in categories:
            raise VocabularyError(f"tag {name!r} has unknown category {category!r}; categories: {list(categories)}")
        names.append(name)
        cats.append(categories.index(category) if category is not None else NO_CATEGORY)
    return tuple(names), tuple(cats)


BUILTIN = Vocabulary(
    cities=taxonomy.CITIES,
    neighborhoods=taxonomy.NEIGHBORHOODS,
    categories=taxonomy.COARSE_CATEGORIES,
    tags=taxonomy.FINE_TAGS,
    tag_category=taxonomy.FINE_TAG_CATEGORY,
    vibes=taxonomy.VIBE_TAGS,
    time_slots=taxonomy.TIME_SLOTS,
    slot_of_bucket=tuple(
        tuple(taxonomy.time_slot_of(t, w) for w in range(N_DAY_OF_WEEK_BUCKETS)) for t in range(N_TIME_OF_DAY_BUCKETS)
    ),
    price_bands=taxonomy.PRICE_BANDS,
)
