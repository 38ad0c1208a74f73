"""The served ranking of the place model: candidates from a city's index and the sparse filter
scores, each scored exactly. One function for the service (`recommend.place_ranking`) and for the
index check that measures it (`served_agreement`)."""

from __future__ import annotations

import numpy as np

from recsys_core.ranking.blend import BlendQuery, PlaceBlend
from recsys_core.retrieval.index import RETRIEVAL_DEPTH, SERVED_TOP, CityIndex

TIE_TOLERANCE = 1e-5  # relative: the served and the dense form of a score agree to float error


def top_places(
    query: BlendQuery,
    row: int,
    index: CityIndex,
    place_ids: np.ndarray,
    allowed: np.ndarray,
    vectors: np.ndarray,
    seen: np.ndarray,
    depth: int = RETRIEVAL_DEPTH,
) -> tuple[np.ndarray, np.ndarray]:
    """(place indices, exact blend scores), best first, of the `depth` best `allowed` places: the city
    index's nearest to the query (asked for `depth` more than the user's `seen` places, the only city
    places ruled out) and the largest sparse scores."""
    _, found = index.search(query.vector[row : row + 1], depth + len(seen))
    nearest = np.searchsorted(place_ids, found[0][found[0] >= 0])
    candidates = np.union1d(nearest, query.top_sparse(row, depth, allowed))
    candidates = candidates[allowed[candidates]]
    scores = query.scores(row, candidates, vectors)
    order = np.argsort(-scores, kind="stable")[:depth]
    return candidates[order], scores[order]


def served_agreement(
    blend: PlaceBlend,
    index: CityIndex,
    place_ids: np.ndarray,
    city_places: np.ndarray,
    users: np.ndarray,
    k: int = SERVED_TOP,
) -> float:
    """Share of the served top k that belongs in the exact top k of the place model (every city
    place scored, the user's places left out; a tie with the k-th counts), over `users`. Where the
    blend has a graph filter its interaction weights say what each user has seen."""
    vectors = blend.item_vectors()
    seen = blend.seen()
    query = blend.queries(users)
    dense = blend.dense(users).astype(np.float64)
    in_city = np.zeros(blend.n_items, bool)
    in_city[city_places] = True
    hits = total = 0
    for row, user in enumerate(users):
        allowed = in_city.copy()
        visited = seen[user].indices if seen is not None else np.zeros(0, np.int64)
        allowed[visited] = False
        n = min(k, int(allowed.sum()))
        if n == 0:
            continue
        exact_scores = np.where(allowed, dense[row], -np.inf)
        kth = np.sort(exact_scores)[::-1][n - 1]
        served, _ = top_places(query, row, index, place_ids, allowed, vectors, visited)
        # a served place counts when it scores as high as the exact k-th (ties may fall either way)
        hits += int((exact_scores[served[:n]] >= kth - TIE_TOLERANCE * max(abs(kth), 1.0)).sum())
        total += n
    return hits / max(total, 1)
