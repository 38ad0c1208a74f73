"""A known user's places ranked by the place model: the one scoring path of the service and of
`batch_recommendations`, so a batch line is what the service would answer.

Candidates are the city index's nearest places to the user's blend query (the low-rank parts)
and the places with the largest sparse graph-filter scores; each is then scored exactly
(`ranking.served.top_places`). Places the user has been to are never returned.
"""

from __future__ import annotations

import numpy as np

from recsys_core.ranking.served import top_places
from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.queries import CANDIDATES


def seen_places(art: ServingArtifacts, user: int) -> np.ndarray:
    seen: np.ndarray = art.seen.indices[art.seen.indptr[user] : art.seen.indptr[user + 1]]
    return seen


def rank_places(art: ServingArtifacts, user: int, city: int, depth: int = CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """(place indices, blend scores) of the user's best `depth` unseen places in `city`, best first."""
    blend, vectors = art.place_model, art.retrieval
    if blend is None or vectors is None:
        raise RuntimeError("rank_places needs a manifest with a place model")
    seen = seen_places(art, user)
    allowed = art.place_city == city
    allowed[seen] = False
    query = blend.queries(np.array([user]))
    return top_places(query, 0, art.place_indices[city], art.place_ids, allowed, vectors, seen, depth)
