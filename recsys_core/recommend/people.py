"""People recommendations: who in the city a user would get along with, and who would come along.

Candidates are the people model's (`ranking.people`: proximity and taste candidates ordered by a
re-ranker, precomputed per user; the city's user index by <z_u, z_v> for manifests without one),
the user themself and (where the data's social edges are real friendships) existing friends left
out. On friendship data (labels derived from the friendships) the people model's odds are the
compatibility, and without a target place or activity tags its order is kept (combined = its odds,
as measured). On data with similarity edges and friend labels of its own, the user's social
neighbours join the candidates and the friend head gives compatibility. The friend head gives
attendance; a target place scales it by how much that place stands out for the candidate, and
activity tags scale the combined score by how much the candidate is into them; people are then
ordered by 0.7 compatibility + 0.3 attendance.

Users with tastes (the vocabulary has tags or vibes) are explained by them; users without
(interaction-only data) by their history: a place both went to, friends in common
(`explain.explain_people_from_history`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys_core.explain import Wishes, explain_people_from_history, explain_person
from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.places import resolve_city
from recsys_core.recommend.queries import CANDIDATES, NotFound, PeopleQuery, check_top_k

COMPAT_WEIGHT = 0.7  # combined = 0.7 compatibility + 0.3 attendance (the specification's alpha)


@dataclass(frozen=True)
class PersonResult:
    user_id: int
    compat_score: float
    attend_prob: float
    combined_score: float
    explanations: list[str]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    p: NDArray[np.floating[Any]] = 1.0 / (1.0 + np.exp(-x))
    return p


def recommend_people(art: ServingArtifacts, query: PeopleQuery, explain: bool = True) -> list[PersonResult]:
    """The ranked people of one request; `explain=False` leaves the reasons out (batch scoring)."""
    check_top_k(query.top_k)
    user = art.user_index(query.user_id)
    if user is None:
        raise NotFound("user_id", f"unknown user {query.user_id}")
    target = None
    if query.target_place_id is not None:
        target = art.place_index(query.target_place_id)
        if target is None:
            raise NotFound("target_place_id", f"unknown place {query.target_place_id}")
    city = resolve_city(art, query.city_id, user)
    excluded = {user}
    if art.manifest.social_edges_are_friendships:
        excluded.update(art.friends.indices[art.friends.indptr[user] : art.friends.indptr[user + 1]].tolist())
    logits = None
    if art.people_model is not None:  # the people model's candidates, best first
        candidates, logits = art.people_model.of(user)
        if not art.manifest.social_edges_are_friendships:
            # similarity edges: the user's social neighbours are fair candidates too, and the friend
            # head (trained on the data's own labels) orders them all
            neighbours = art.friends.indices[art.friends.indptr[user] : art.friends.indptr[user + 1]]
            candidates, logits = np.union1d(candidates, neighbours), None
        keep = (art.user_city[candidates] == city) & ~np.isin(candidates, list(excluded))
        candidates = candidates[keep]
        logits = logits[keep] if logits is not None else None
    else:
        _, found = art.user_indices[city].search(art.z_user[user : user + 1].numpy(), CANDIDATES + len(excluded))
        candidates = art.users_of(found[0][found[0] >= 0])
        candidates = candidates[~np.isin(candidates, list(excluded))]
    if not len(candidates):
        return []
    compat, attend = _friend_scores(art, user, candidates)
    if logits is not None:  # friendship data, its labels derived from the friendships: the model's own odds
        compat = _sigmoid(logits.astype(np.float64))
    if target is not None:
        fit = (art.z_user[candidates] @ art.z_place[target]).numpy()
        attend = attend * _sigmoid((fit - art.score_mean[candidates]) / art.score_std[candidates])
    combined = COMPAT_WEIGHT * compat + (1 - COMPAT_WEIGHT) * attend
    if query.activity_tags and art.x_user.shape[1]:
        taste = art.x_user_np[candidates][:, art.layouts.user["fine_pref"]]
        into = taste[:, list(query.activity_tags)].sum(1) / np.maximum(taste.max(1), 1e-6) / len(query.activity_tags)
        combined = combined * (0.5 + 0.5 * np.clip(into, 0.0, 1.0))
    if logits is not None and not query.has_context:
        combined = compat  # no context: the people model's order and odds (as measured)
        order = np.arange(len(candidates))[: query.top_k]
    else:
        order = np.argsort(-combined, kind="stable")[: query.top_k]
    chosen = candidates[order]
    if not explain:
        reasons: list[list[str]] = [[] for _ in chosen]
    elif has_tastes(art):
        wishes = Wishes(
            tags=query.activity_tags, target_place_name=art.place_names[target] if target is not None else None
        )
        reasons = [_taste_reasons(art, user, int(other), wishes, target) for other in chosen]
    else:
        reasons = _history_reasons(art, user, chosen)
    return [
        PersonResult(int(art.user_ids[other]), float(compat[i]), float(attend[i]), float(combined[i]), r)
        for other, i, r in zip(chosen, order, reasons, strict=True)
    ]


def has_tastes(art: ServingArtifacts) -> bool:
    """Whether users carry taste vectors to compare: features, and tags or vibes for them to be of."""
    return bool(art.x_user.shape[1] and (art.vocabulary.tags or art.vocabulary.vibes))


def _friend_scores(art: ServingArtifacts, user: int, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    compat, attend = art.friend_head.scores(art.z_user_np, user, candidates)
    return _sigmoid(compat), _sigmoid(attend)


def _taste_reasons(art: ServingArtifacts, user: int, other: int, wishes: Wishes, target: int | None) -> list[str]:
    target_x = art.x_place_np[target] if target is not None else None
    return explain_person(
        art.x_user_np[user], art.x_user_np[other], wishes, target_x, vocabulary=art.vocabulary, layouts=art.layouts
    )


def _history_reasons(art: ServingArtifacts, user: int, others: np.ndarray) -> list[list[str]]:
    """History reasons for all of a response's people: the user's places each candidate also went
    to (one sparse slice) and their friends in common (one sparse product)."""
    mine = art.seen.indices[art.seen.indptr[user] : art.seen.indptr[user + 1]]
    both = sp.csr_matrix(art.seen[others][:, mine])
    shared = [np.sort(mine[both.indices[both.indptr[k] : both.indptr[k + 1]]]) for k in range(len(others))]
    if art.manifest.social_edges_are_friendships:
        common = np.asarray((art.friends[others] @ art.friends[user].T).toarray()).ravel()
    else:  # similarity edges are not friends: there are no friends in common to name
        common = np.zeros(len(others))
    return explain_people_from_history(shared, art.popularity, common, art.place_names)
