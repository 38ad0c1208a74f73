"""Human-readable reasons for a recommendation, read off the same features the model scores.

Every sentence names something true of the pair: the fine tags both sides carry, the
vibes two people share, the neighbourhoods a user frequents, what the request asked for,
or (from the GNN's last-layer edge weights) the past visits that shaped the user's profile.
Each list holds 1-3 reasons, strongest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys_core.features import PLACE_LAYOUT, USER_LAYOUT
from recsys_core.taxonomy import COARSE_CATEGORIES, FINE_TAGS, TIME_SLOTS, VIBE_TAGS, neighborhood_name

MAX_REASONS = 3
TAG_MIN = 0.02  # a taste weight below this is noise, not an interest
CATEGORY_MIN = 0.15
AREA_MIN = 0.1
VIBE_MIN = 0.04


def _words(names: list[str]) -> str:
    names = [n.replace("_", " ") for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _top(values: np.ndarray, minimum: float, k: int = 2) -> list[int]:
    order = np.argsort(-values, kind="stable")[:k]
    return [int(i) for i in order if values[i] > minimum]


def place_name(place_x: np.ndarray) -> str:
    """A display name from the place's strongest tags and its neighbourhood ("Jazz & wine bar · Soho")."""
    tags = _top(place_x[PLACE_LAYOUT["fine_tag_vector"]], 0.0)
    city = int(place_x[PLACE_LAYOUT["city_id"]][0])
    area = neighborhood_name(city, int(place_x[PLACE_LAYOUT["neighborhood_id"]][0]))
    label = " & ".join(FINE_TAGS[t].replace("_", " ") for t in tags).capitalize() or "Place"
    return f"{label} · {area}"


@dataclass(frozen=True)
class Wishes:
    """What a request asked for (all optional)."""

    categories: tuple[int, ...] = ()
    tags: tuple[int, ...] = ()
    time_slot: int | None = None
    target_place_name: str | None = None


@dataclass
class _Reasons:
    items: list[str] = field(default_factory=list)

    def add(self, text: str | None) -> None:
        if text and text not in self.items and len(self.items) < MAX_REASONS:
            self.items.append(text)


def _top_rows(values: np.ndarray, minimum: float, k: int = 2) -> list[list[int]]:
    """`_top` for every row of a matrix, with one sort."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    keep = np.take_along_axis(values, order, axis=1) > minimum
    return [[int(i) for i, ok in zip(row, oks, strict=True) if ok] for row, oks in zip(order, keep, strict=True)]


def explain_places(
    user_x: np.ndarray | None,
    places_x: np.ndarray,
    wishes: Wishes = Wishes(),
    influences: Sequence[tuple[int, str, np.ndarray]] = (),
    popular_in_city: bool = False,
    place_index: np.ndarray | None = None,
) -> list[list[str]]:
    """Why each row of `places_x` suits the user (`user_x` None: a profile-only request).

    The array work runs once for all the places of a response (a serving hot path); the
    strings are assembled per place. `influences` are (place index, name, tag vector) of the
    user's most influential past visits; `place_index` lets a place not cite itself.
    """
    n = len(places_x)
    tags = places_x[:, PLACE_LAYOUT["fine_tag_vector"]]
    has_tag = tags > 0
    slots = places_x[:, PLACE_LAYOUT["typical_time_slot"]][:, 0].astype(int)
    cities = places_x[:, PLACE_LAYOUT["city_id"]][:, 0].astype(int)
    nbhds = places_x[:, PLACE_LAYOUT["neighborhood_id"]][:, 0].astype(int)
    place_cats = places_x[:, PLACE_LAYOUT["category_one_hot"]] > 0
    asked = [[t for t in wishes.tags if row[t]] for row in has_tag]
    if user_x is not None:
        shared = _top_rows(user_x[USER_LAYOUT["fine_pref"]][None, :] * has_tag, TAG_MIN)
        top_cat = _top_rows(user_x[USER_LAYOUT["cat_pref"]][None, :] * place_cats, CATEGORY_MIN, k=1)
        area = user_x[USER_LAYOUT["area_freqs"]][nbhds] * (cities == user_x[USER_LAYOUT["city_id"]][0])
        if influences:
            overlap = np.stack([past for _, _, past in influences])[:, None, :] * tags[None, :, :]  # (past, place, tag)
            common = overlap.argmax(-1)
            common_ok = np.take_along_axis(overlap, common[..., None], -1)[..., 0] > 0
    out = []
    for j in range(n):
        reasons = _Reasons()
        if asked[j]:
            reasons.add(f"Has the {_words([FINE_TAGS[t] for t in asked[j][:2]])} you asked for")
        if wishes.time_slot is not None and slots[j] == wishes.time_slot:
            reasons.add(f"At its best in the {TIME_SLOTS[slots[j]].replace('_', ' ')}, when you want to go")
        if user_x is not None:
            if shared[j]:
                reasons.add(f"Matches your interest in {_words([FINE_TAGS[t] for t in shared[j]])}")
            for i, (past, name, _) in enumerate(influences):
                if common_ok[i, j] and (place_index is None or past != place_index[j]):
                    reasons.add(f"Like {name}, which you went to ({FINE_TAGS[common[i, j]].replace('_', ' ')})")
                    break
            if top_cat[j]:
                reasons.add(f"You enjoy {COARSE_CATEGORIES[top_cat[j][0]]} spots")
            if area[j] > AREA_MIN:
                reasons.add(f"In {neighborhood_name(cities[j], nbhds[j])}, where you often go out")
        cats_asked = [c for c in wishes.categories if place_cats[j, c]]
        if cats_asked:
            reasons.add(f"A {COARSE_CATEGORIES[cats_asked[0]]} spot, as you asked")
        if popular_in_city or not reasons.items:
            reasons.add("Popular with people in this city")
        out.append(reasons.items)
    return out


def explain_person(
    user_x: np.ndarray, other_x: np.ndarray, wishes: Wishes = Wishes(), target_place_x: np.ndarray | None = None
) -> list[str]:
    """Why two users would get along (and come along to the target place)."""
    reasons = _Reasons()
    fine_u, fine_v = user_x[USER_LAYOUT["fine_pref"]], other_x[USER_LAYOUT["fine_pref"]]
    if target_place_x is not None and wishes.target_place_name:
        place_tags = target_place_x[PLACE_LAYOUT["fine_tag_vector"]] > 0
        liked = _top(fine_v * place_tags, TAG_MIN, k=1)
        if liked:
            reasons.add(f"Into {FINE_TAGS[liked[0]].replace('_', ' ')}, like {wishes.target_place_name}")
    asked = [t for t in wishes.tags if fine_v[t] > TAG_MIN]
    if asked:
        reasons.add(f"Also into {_words([FINE_TAGS[t] for t in asked[:2]])}")
    shared = _top(np.minimum(fine_u, fine_v), TAG_MIN)
    if shared:
        reasons.add(f"You both like {_words([FINE_TAGS[t] for t in shared])}")
    vibes = _top(np.minimum(user_x[USER_LAYOUT["vibe_pref"]], other_x[USER_LAYOUT["vibe_pref"]]), VIBE_MIN)
    if vibes:
        reasons.add(f"You're both {_words([VIBE_TAGS[v] for v in vibes])}")
    if user_x[USER_LAYOUT["city_id"]][0] == other_x[USER_LAYOUT["city_id"]][0]:
        area = _top(np.minimum(user_x[USER_LAYOUT["area_freqs"]], other_x[USER_LAYOUT["area_freqs"]]), AREA_MIN, k=1)
        if area:
            reasons.add(f"You both go out in {neighborhood_name(int(user_x[USER_LAYOUT['city_id']][0]), area[0])}")
    if not reasons.items:
        reasons.add("People with tastes like yours get along with them")
    return reasons.items
