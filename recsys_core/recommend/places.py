"""Place recommendations: the place model's ranking in the city (`place_ranking`; GraphRec's ANN
retrieval and head for manifests without one), re-ranked by the place head under the request
context, explanations; popularity and profile fallbacks for cold users.

Places with content (categories, tags) are explained by it; places without (interaction-only
data) by the user's history: the past place nearest in the served embeddings, the past place
sharing most visitors (`explain.explain_places_from_history`). Either way a place one of the
user's most influential friends went to says so, by the friend's name where there is one, and
a content explanation otherwise cites the influential past place whose visitors go there too
(`explain.GraphPaths`, built per response from the load-time influence lists)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys_core.explain import GraphPaths, Wishes, explain_places, explain_places_from_history
from recsys_core.model.config import has_place_content
from recsys_core.ranking.parts import spans
from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.place_ranking import rank_places, seen_places
from recsys_core.recommend.queries import CANDIDATES, NotFound, PlaceQuery, RequestError, check_time_slot, check_top_k
from recsys_core.social import unit_rows

COLD_BLEND = 0.5  # weight of city popularity for a known user without history
# An explicit wish (a category, tags, a time slot) moves a place that meets it all by this many standard
# deviations of the model's scores: what a request asks for shows whatever the head learned of context.
WISH_WEIGHT = 1.0
HISTORY_CAP = 50  # past places a history explanation chooses from: enough to find a close one, cheap per request


@dataclass(frozen=True)
class PlaceResult:
    place_id: int
    name: str
    score: float
    explanations: list[str]


def _zscore(values: np.ndarray) -> np.ndarray:
    z: NDArray[np.floating[Any]] = (values - values.mean()) / max(float(values.std()), 1e-6)
    return z


def resolve_city(art: ServingArtifacts, city_id: int | None, user: int | None) -> int:
    if city_id is None:
        if user is None:
            raise RequestError("city_id", "is required for a user without history")
        return int(art.user_city[user])
    if city_id not in art.place_indices:
        raise RequestError("city_id", f"unknown city {city_id}; served cities: {art.cities}")
    return city_id


def _profile_scores(art: ServingArtifacts, query: PlaceQuery, places: np.ndarray) -> np.ndarray:
    """Content-based score of a profile-only request: tag cosine + category match + popularity."""
    x, layout = art.x_place_np[places], art.layouts.place
    wanted = np.zeros(layout.size("fine_tag_vector"), np.float32)
    wanted[list(query.desired_tags)] = 1.0
    tags = unit_rows(x[:, layout["fine_tag_vector"]]) @ (wanted / max(float(np.linalg.norm(wanted)), 1e-6))
    cats = (
        (x[:, layout["category_one_hot"]][:, list(query.desired_categories)] > 0).any(axis=1)
        if query.desired_categories
        else 0.0
    )
    slot = (x[:, layout["typical_time_slot"]][:, 0] == query.time_slot) if query.time_slot is not None else 0.0
    scores: NDArray[np.floating[Any]] = tags + 0.5 * cats + 0.2 * slot + 0.1 * _zscore(art.popularity[places])
    return scores


def _wishes(art: ServingArtifacts, places: np.ndarray, query: PlaceQuery) -> np.ndarray:
    met = art.place_head.wish_match(places, query.time_slot, query.desired_categories, query.desired_tags)
    out: np.ndarray = WISH_WEIGHT * met
    return out


def _head_scores(art: ServingArtifacts, user: int, places: np.ndarray, query: PlaceQuery, city: int) -> np.ndarray:
    head = art.place_head
    return head.scores(art.z_user_np[user], places, city, query.time_slot, query.desired_categories, query.desired_tags)


def recommend_places(art: ServingArtifacts, query: PlaceQuery, explain: bool = True) -> list[PlaceResult]:
    """The ranked places of one request; `explain=False` leaves the reasons out (batch scoring)."""
    check_top_k(query.top_k)
    check_time_slot(query.time_slot, art.vocabulary)
    user = art.user_index(query.user_id)
    if user is None and not query.has_profile:
        raise NotFound(
            "user_id",
            f"unknown user {query.user_id}; send desired_tags or desired_categories (and city_id) "
            "for profile-based recommendations",
        )
    city = resolve_city(art, query.city_id, user)
    index = art.place_indices[city]
    if user is None:
        places = np.searchsorted(art.place_ids, index.ids)
        scores = _profile_scores(art, query, places)
        cold = True
    elif art.place_model is not None and len(seen_places(art, user)):
        places, scores = rank_places(art, user, city)
        cold = False
        if query.has_context:  # the place head re-ranks the model's candidates under the request's context
            scores = (
                _zscore(scores) + _zscore(_head_scores(art, user, places, query, city)) + _wishes(art, places, query)
            )
    else:
        seen = seen_places(art, user)
        if art.place_model is not None:  # the index holds the place model's vectors
            places = np.zeros(0, np.int64)
        else:
            _, found = index.search(art.z_user[user : user + 1].numpy(), CANDIDATES + len(seen))
            places = np.setdiff1d(art.places_of(found[0][found[0] >= 0]), seen, assume_unique=True)
        cold = len(seen) == 0
        if cold:  # no history: blend the city's most popular places with the feature-based profile
            city_places = np.searchsorted(art.place_ids, index.ids)
            popular = city_places[np.argsort(-art.popularity[city_places], kind="stable")[:CANDIDATES]]
            places = np.union1d(places, popular)
        scores = _head_scores(art, user, places, query, city)
        if cold:
            scores = (1 - COLD_BLEND) * _zscore(scores) + COLD_BLEND * _zscore(art.popularity[places])
            scores = scores + _wishes(art, places, query)
    order = np.argsort(-scores, kind="stable")[: query.top_k]
    top = places[order]
    ids = art.place_ids[top]
    names = [art.place_names[i] for i in top]
    if not explain:
        reasons: list[list[str]] = [[] for _ in top]
    elif not has_place_content(art.vocabulary) or not art.x_place_np.shape[1]:  # only the history can explain
        reasons = _history_explanations(art, user, top)
    else:
        user_x = art.x_user_np[user] if user is not None and art.x_user_np.shape[1] else None
        wishes = Wishes(query.desired_categories, query.desired_tags, query.time_slot)
        reasons = explain_places(
            user_x,
            art.x_place_np[top],
            wishes,
            _influences(art, user),
            cold,
            top,
            graph_paths(art, user, top),
            vocabulary=art.vocabulary,
            layouts=art.layouts,
        )
    return [
        PlaceResult(int(i), name, float(scores[k]), r) for i, name, k, r in zip(ids, names, order, reasons, strict=True)
    ]


def _influences(art: ServingArtifacts, user: int | None) -> list[tuple[int, str, np.ndarray]]:
    """(place index, name, tag vector) of the past visits that weighed most for this user."""
    if user is None:
        return []
    tags = art.layouts.place["fine_tag_vector"]
    return [(int(i), art.place_names[i], art.x_place_np[i, tags]) for i in art.influences[user]]


def _rows(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column indices of `rows` of a CSR matrix, flat, and which of `rows` each came from: plain
    numpy on the CSR arrays (scipy's row indexing costs more than the whole of a response's reasons)."""
    rows = np.asarray(rows, np.int64)
    starts = matrix.indptr[rows].astype(np.int64)
    lengths = matrix.indptr[rows + 1].astype(np.int64) - starts
    return matrix.indices[spans(starts, lengths)], np.repeat(np.arange(len(rows)), lengths)


def _went(art: ServingArtifacts, users: np.ndarray, places: np.ndarray) -> np.ndarray:
    """(len(users), len(places)) whether each user interacted with each place, in one pass over the
    users' rows of `seen` (the users are a handful of influential friends)."""
    went = np.zeros((len(users), len(places)), bool)
    if not len(users) or not len(places):
        return went
    visited, owner = _rows(art.seen, users)
    order = np.argsort(places, kind="stable")
    position = np.minimum(np.searchsorted(places[order], visited), len(places) - 1)
    hit = places[order][position] == visited
    went[owner[hit], order[position[hit]]] = True
    return went


def _co_visitors(art: ServingArtifacts, user: int, past: np.ndarray, places: np.ndarray) -> np.ndarray:
    """(len(past), len(places)) how many users other than `user` went to both places: the places'
    visitors looked up among the past places' sorted visitors, one join for all pairs."""
    if not len(past) or not len(places):
        return np.zeros((len(past), len(places)), np.float32)
    theirs, source = _rows(art.visitors, past)
    order = np.argsort(theirs, kind="stable")
    theirs, source = theirs[order], source[order]
    visitors, column = _rows(art.visitors, places)
    others = visitors != user
    visitors, column = visitors[others], column[others]
    low = np.searchsorted(theirs, visitors, side="left")
    matches = np.searchsorted(theirs, visitors, side="right") - low  # at most one per past place
    pair = source[spans(low, matches)] * len(places) + np.repeat(column, matches)
    counts = np.bincount(pair, minlength=len(past) * len(places)).astype(np.float32)
    return counts.reshape(len(past), len(places))


def graph_paths(art: ServingArtifacts, user: int | None, top: np.ndarray, co_visits: bool = True) -> GraphPaths | None:
    """Which of the user's influential friends went to each of `top`, and (`co_visits`) how many other
    users went to both it and each influential past place: the graph's paths to the places."""
    if user is None:
        return None
    friends = art.influential_friends(user)
    past = np.asarray(art.influences[user], np.int64) if co_visits else np.zeros(0, np.int64)
    return GraphPaths(
        friend_names=[art.user_name(int(f)) for f in friends],
        friend_went=_went(art, friends, top),
        past=past,
        past_names=[art.place_names[int(p)] for p in past],
        co_visitors=_co_visitors(art, user, past, top),
        friendships=art.manifest.social_edges_are_friendships,
    )


def past_places(art: ServingArtifacts, user: int | None, cap: int = HISTORY_CAP) -> np.ndarray:
    """The user's past places, the most influential visits first, then the rest of what they saw."""
    if user is None:
        return np.zeros(0, np.int64)
    seen = art.seen.indices[art.seen.indptr[user] : art.seen.indptr[user + 1]]
    both = np.concatenate([np.asarray(art.influences[user], np.int64), seen.astype(np.int64)])
    _, first = np.unique(both, return_index=True)
    kept: np.ndarray = both[np.sort(first)][:cap]
    return kept


def _history_explanations(art: ServingArtifacts, user: int | None, top: np.ndarray) -> list[list[str]]:
    """History reasons for all of a response's places: one sparse product gives every co-visit count."""
    past = past_places(art, user)
    if len(past) and len(top):
        co_visitors = (art.visitors[past] @ art.visitors[top].T).toarray()
    else:
        co_visitors = np.zeros((len(past), len(top)), np.float32)
    z = art.z_place_np
    paths = graph_paths(art, user, top, co_visits=False)  # the history reasons count co-visitors themselves
    return explain_places_from_history(past, top, z[past], z[top], co_visitors, art.place_names, paths)
