"""Human-readable reasons for a recommendation, read off the same features the model scores.

Every sentence names something true of the pair: the fine tags both sides carry, the
vibes two people share, the neighbourhoods a user frequents, what the request asked for,
or (from the GNN's last-layer edge weights) the past visits and the friends that shaped the
user's profile. Each list holds 1-3 reasons, strongest first.

A place reached through the graph says how (`GraphPaths`): one of the user's most influential
friends went there ("Priya, your friend, goes here": of those who did, the one whose message
weighed most; "A friend of yours goes here" for a friend without a name; "who shares your tastes"
where the social edges are similarity, not friendship), or else people who go to one of the
user's most influential past places go there too ("People who go to X go here").

A world whose places carry no content (interaction-only data: no categories, tags or vibes) has
only history to cite: the past place the served embeddings put nearest ("Because you went to X"),
the past place sharing most visitors ("Popular with people who go to Y"), the places and friends
two people have in common (`explain_places_from_history`, `explain_people_from_history`).

The names come from the world's vocabulary and the feature offsets from its layouts, both
passed in (the served artifacts hold them): a world with other cities and tags is explained
in its own words. A neighbourhood the vocabulary does not name is not mentioned at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recsys_core.features import FeatureLayouts
from recsys_core.vocabulary import Vocabulary

MAX_REASONS = 3
TAG_MIN = 0.02  # a taste weight below this is noise, not an interest
CATEGORY_MIN = 0.15
AREA_MIN = 0.1
VIBE_MIN = 0.04
SIMILAR_MIN = 0.0  # a past place whose embedding points away from a place does not explain it
POPULAR_IN_CITY = "Popular with people in this city"
GET_ALONG = "Goes to the same places as people you get along with"
A_FRIEND_GOES = "A friend of yours goes here"
A_LIKE_MINDED_USER_GOES = "Someone with tastes like yours goes here"
PEOPLE_MIN = 2  # other users who went to both places before "people who go to X go here": one is not people


class PlaceNamer(Protocol):
    """Anything that names a place index (`ServingArtifacts.place_names`, a list, a dict)."""

    def __getitem__(self, index: int, /) -> str: ...


def _words(names: list[str]) -> str:
    names = [n.replace("_", " ") for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _top(values: np.ndarray, minimum: float, k: int = 2) -> list[int]:
    order = np.argsort(-values, kind="stable")[:k]
    return [int(i) for i in order if values[i] > minimum]


def _layouts(vocabulary: Vocabulary, layouts: FeatureLayouts | None) -> FeatureLayouts:
    return layouts if layouts is not None else FeatureLayouts.for_vocabulary(vocabulary)


def place_name(place_x: np.ndarray, *, vocabulary: Vocabulary, layouts: FeatureLayouts | None = None) -> str:
    """A display name from the place's strongest tags and its neighbourhood ("Jazz & wine bar · Soho").

    `layouts` default to the vocabulary's (pass them in on a hot path)."""
    place = _layouts(vocabulary, layouts).place
    tags = _top(place_x[place["fine_tag_vector"]], 0.0)
    city = int(place_x[place["city_id"]][0])
    area = vocabulary.neighborhood_name(city, int(place_x[place["neighborhood_id"]][0]))
    label = " & ".join(vocabulary.tags[t].replace("_", " ") for t in tags).capitalize() or "Place"
    return f"{label} · {area}" if area is not None else label


@dataclass(frozen=True)
class Wishes:
    """What a request asked for (all optional)."""

    categories: tuple[int, ...] = ()
    tags: tuple[int, ...] = ()
    time_slot: int | None = None
    target_place_name: str | None = None


@dataclass(frozen=True)
class GraphPaths:
    """How a response's places are reached from the user in the served graph.

    `friend_names` are the user's most influential friends (social neighbours), heaviest last-layer
    weight first, each with a display name or None; `friend_went` (F, n) whether friend f went to
    place j. `past` (P,) are the user's most influential past places (indices), heaviest first, with
    their `past_names`; `co_visitors` (P, n) how many other users went to both (cited from `PEOPLE_MIN`).
    `friendships`: the social edges are declared friendships (otherwise similar users, not friends).
    """

    friend_names: Sequence[str | None]
    friend_went: np.ndarray
    past: np.ndarray
    past_names: Sequence[str]
    co_visitors: np.ndarray
    friendships: bool = True

    def through(self, places: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per place, the position of the heaviest friend who went there and of the heaviest past place
        sharing visitors with it (-1: none); a past place is not a path to itself (`places`: indices)."""
        shared = np.asarray(self.co_visitors) >= PEOPLE_MIN
        if places is not None and shared.size:
            shared = shared & (np.asarray(self.past)[:, None] != np.asarray(places)[None, :])
        return _first(np.asarray(self.friend_went, bool)), _first(shared)

    def friend_reason(self, k: int) -> str:
        name = (self.friend_names[k] or "").strip()
        if self.friendships:
            return f"{name}, your friend, goes here" if name else A_FRIEND_GOES
        return f"{name}, who shares your tastes, goes here" if name else A_LIKE_MINDED_USER_GOES

    def people_reason(self, k: int) -> str:
        return f"People who go to {self.past_names[k]} go here"


def _first(mask: np.ndarray) -> np.ndarray:
    """Per column of a (k, n) mask, the first row that is True, or -1 (rows are heaviest first)."""
    if not mask.shape[0]:
        return np.full(mask.shape[1], -1)
    first: np.ndarray = np.where(mask.any(axis=0), mask.argmax(axis=0), -1)
    return first


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
    paths: GraphPaths | None = None,
    *,
    vocabulary: Vocabulary,
    layouts: FeatureLayouts | None = None,
) -> list[list[str]]:
    """Why each row of `places_x` suits the user (`user_x` None: a profile-only request).

    The array work runs once for all the places of a response (a serving hot path); the
    strings are assembled per place. `influences` are (place index, name, tag vector) of the
    user's most influential past visits; `place_index` lets a place not cite itself; `paths`
    say which influential friend or past place leads to each place (cited after what the
    request asked for, before tastes: it is how the GNN got there).
    `vocabulary` names the ids; `layouts` (default: the vocabulary's) locate them in the features.
    """
    feature_layouts = _layouts(vocabulary, layouts)
    place, user = feature_layouts.place, feature_layouts.user
    tag_names, category_names, slot_names = vocabulary.tags, vocabulary.categories, vocabulary.time_slots
    n = len(places_x)
    tags = places_x[:, place["fine_tag_vector"]]
    has_tag = tags > 0
    slots = places_x[:, place["typical_time_slot"]][:, 0].astype(int)
    cities = places_x[:, place["city_id"]][:, 0].astype(int)
    nbhds = places_x[:, place["neighborhood_id"]][:, 0].astype(int)
    place_cats = places_x[:, place["category_one_hot"]] > 0
    asked = [[t for t in wishes.tags if row[t]] for row in has_tag]
    if user_x is not None:
        shared = _top_rows(user_x[user["fine_pref"]][None, :] * has_tag, TAG_MIN)
        top_cat = _top_rows(user_x[user["cat_pref"]][None, :] * place_cats, CATEGORY_MIN, k=1)
        known = (nbhds >= 0) & (cities == user_x[user["city_id"]][0])  # UNKNOWN (-1): no neighbourhood to name
        area = np.where(known, user_x[user["area_freqs"]][np.maximum(nbhds, 0)], 0.0)
        if not tags.shape[1]:
            influences = ()  # a vocabulary without tags: no tag for a past visit to share
        if influences:
            overlap = np.stack([past for _, _, past in influences])[:, None, :] * tags[None, :, :]  # (past, place, tag)
            common = overlap.argmax(-1)
            common_ok = np.take_along_axis(overlap, common[..., None], -1)[..., 0] > 0
    friend, people = paths.through(place_index) if paths is not None else (np.full(n, -1), np.full(n, -1))
    out = []
    for j in range(n):
        reasons = _Reasons()
        if asked[j]:
            reasons.add(f"Has the {_words([tag_names[t] for t in asked[j][:2]])} you asked for")
        if wishes.time_slot is not None and slots[j] == wishes.time_slot:
            reasons.add(f"At its best in the {slot_names[slots[j]].replace('_', ' ')}, when you want to go")
        cited = -1  # the past place already cited through its visitors
        if paths is not None and friend[j] >= 0:
            reasons.add(paths.friend_reason(int(friend[j])))
        elif paths is not None and people[j] >= 0:
            reasons.add(paths.people_reason(int(people[j])))
            cited = int(paths.past[people[j]])
        if user_x is not None:
            if shared[j]:
                reasons.add(f"Matches your interest in {_words([tag_names[t] for t in shared[j]])}")
            for i, (past, name, _) in enumerate(influences):
                if past == cited:
                    continue
                if common_ok[i, j] and (place_index is None or past != place_index[j]):
                    reasons.add(f"Like {name}, which you went to ({tag_names[common[i, j]].replace('_', ' ')})")
                    break
            if top_cat[j]:
                reasons.add(f"You enjoy {category_names[top_cat[j][0]]} spots")
            if area[j] > AREA_MIN:
                where = vocabulary.neighborhood_name(int(cities[j]), int(nbhds[j]))
                if where is not None:
                    reasons.add(f"In {where}, where you often go out")
        cats_asked = [c for c in wishes.categories if place_cats[j, c]]
        if cats_asked:
            reasons.add(f"A {category_names[cats_asked[0]]} spot, as you asked")
        if popular_in_city or not reasons.items:
            reasons.add(POPULAR_IN_CITY)
        out.append(reasons.items)
    return out


def explain_person(
    user_x: np.ndarray,
    other_x: np.ndarray,
    wishes: Wishes = Wishes(),
    target_place_x: np.ndarray | None = None,
    *,
    vocabulary: Vocabulary,
    layouts: FeatureLayouts | None = None,
) -> list[str]:
    """Why two users would get along (and come along to the target place), in `vocabulary`'s names."""
    feature_layouts = _layouts(vocabulary, layouts)
    place, user = feature_layouts.place, feature_layouts.user
    tag_names = vocabulary.tags
    reasons = _Reasons()
    fine_u, fine_v = user_x[user["fine_pref"]], other_x[user["fine_pref"]]
    if target_place_x is not None and wishes.target_place_name:
        place_tags = target_place_x[place["fine_tag_vector"]] > 0
        liked = _top(fine_v * place_tags, TAG_MIN, k=1)
        if liked:
            reasons.add(f"Into {tag_names[liked[0]].replace('_', ' ')}, like {wishes.target_place_name}")
    asked = [t for t in wishes.tags if fine_v[t] > TAG_MIN]
    if asked:
        reasons.add(f"Also into {_words([tag_names[t] for t in asked[:2]])}")
    shared = _top(np.minimum(fine_u, fine_v), TAG_MIN)
    if shared:
        reasons.add(f"You both like {_words([tag_names[t] for t in shared])}")
    vibes = _top(np.minimum(user_x[user["vibe_pref"]], other_x[user["vibe_pref"]]), VIBE_MIN)
    if vibes:
        reasons.add(f"You're both {_words([vocabulary.vibes[v] for v in vibes])}")
    if user_x[user["city_id"]][0] == other_x[user["city_id"]][0]:
        area = _top(np.minimum(user_x[user["area_freqs"]], other_x[user["area_freqs"]]), AREA_MIN, k=1)
        where = vocabulary.neighborhood_name(int(user_x[user["city_id"]][0]), area[0]) if area else None
        if where is not None:
            reasons.add(f"You both go out in {where}")
    if not reasons.items:
        reasons.add("People with tastes like yours get along with them")
    return reasons.items


def _unit(m: np.ndarray) -> np.ndarray:
    unit: np.ndarray = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return unit


def explain_places_from_history(
    past: np.ndarray,
    places: np.ndarray,
    z_past: np.ndarray,
    z_places: np.ndarray,
    co_visitors: np.ndarray,
    names: PlaceNamer,
    paths: GraphPaths | None = None,
) -> list[list[str]]:
    """Why each of `places` follows from the user's past places, for places with no content to cite.

    `past` (P,) and `places` (n,) are place indices (`past` most influential first: ties go to
    the earlier one), `z_past` (P, d) and `z_places` (n, d) their served embeddings, `co_visitors`
    (P, n) how many users went to both. "Because you went to X" cites the past place nearest in the
    embedding space (what the model calls alike), "Popular with people who go to Y" the past place
    sharing most visitors (a fact of the data, so only when there are some). A place never cites
    itself; with no history (or nothing to cite) a place is popular in the city. With `paths`, the
    most influential friend who went there is cited after the nearest past place.
    """
    n = len(places)
    friend = paths.through()[0] if paths is not None else np.full(n, -1)
    if not len(past) or not n:
        return [[paths.friend_reason(int(f))] if paths is not None and f >= 0 else [POPULAR_IN_CITY] for f in friend]
    columns = np.arange(n)
    itself = np.asarray(past)[:, None] == np.asarray(places)[None, :]
    similarity = np.where(itself, -np.inf, _unit(z_past) @ _unit(z_places).T)
    nearest = similarity.argmax(axis=0)
    closeness = similarity[nearest, columns]
    shared = np.where(itself, 0, co_visitors)
    most = shared.argmax(axis=0)
    visitors = shared[most, columns]
    out = []
    for j in range(n):
        reasons = _Reasons()
        if closeness[j] > SIMILAR_MIN:
            reasons.add(f"Because you went to {names[int(past[nearest[j]])]}")
        if paths is not None and friend[j] >= 0:
            reasons.add(paths.friend_reason(int(friend[j])))
        if visitors[j] > 0:
            count = int(round(float(visitors[j])))
            many = f" ({count} of them go here)" if count > 1 else ""
            reasons.add(f"Popular with people who go to {names[int(past[most[j]])]}{many}")
        if not reasons.items:
            reasons.add(POPULAR_IN_CITY)
        out.append(reasons.items)
    return out


def explain_people_from_history(
    shared_places: Sequence[np.ndarray],
    popularity: np.ndarray,
    common_friends: np.ndarray,
    names: PlaceNamer,
) -> list[list[str]]:
    """Why the user would get along with each candidate, for users with no tastes to compare.

    `shared_places[k]` are the place indices both the user and candidate k went to, `popularity`
    any increasing function of each place's visitors (the served log1p), `common_friends[k]` how
    many friends they share. The least visited shared place is cited: two people meeting where few
    go says more than where everyone does.
    """
    out = []
    for places, friends in zip(shared_places, common_friends, strict=True):
        reasons = _Reasons()
        if len(places):
            rarest = int(places[np.argmin(popularity[places])])
            reasons.add(f"You both went to {names[rarest]}")
        if friends > 0:
            count = int(friends)
            reasons.add(f"You have {count} friend{'s' if count > 1 else ''} in common")
        if len(places) > 1:
            reasons.add(f"You have both been to {len(places)} of the same places")
        if not reasons.items:
            reasons.add(GET_ALONG)
        out.append(reasons.items)
    return out
