"""Soft social edges and friend labels of one city."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from recsys_core import contracts, social
from recsys_core.completion import labels_from_friendships
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.hidden import friendships
from recsys_core.synthetic.preference import Tastes


def generate_user_user_edges(config: WorldConfig, users: pa.Table, interactions: pa.Table) -> pa.Table:
    """v1: each user's top-K most similar neighbours in the city (cosine of fine_pref >= threshold).
    v2: the city's friendships (`hidden.friendships`), with the same observed columns."""
    tastes = Tastes.from_table(users)
    if config.realism.enabled:
        a, b = friendships(config, users)
        overlap = social.pair_cosine(tastes.fine_unit, a, b)
    else:
        a, b, overlap = social.top_similar_pairs(tastes.fine_unit, config.social_top_k, config.social_min_overlap)
    co = social.lookup_pair_counts(social.co_attendance_counts(interactions), tastes.ids[a], tastes.ids[b])
    return edges_table(tastes.ids[a], tastes.ids[b], overlap, co, social.neighbourhood_overlap(tastes.area, a, b))


def edges_table(
    u: NDArray[np.int64],
    v: NDArray[np.int64],
    overlap: NDArray[np.floating[Any]],
    co_attendance: NDArray[np.integer[Any]],
    same_neighbourhood: NDArray[np.floating[Any]],
) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array(u, pa.int64()),
            pa.array(v, pa.int64()),
            pa.array(np.clip(overlap, 0.0, 1.0), pa.float32()),
            pa.array(co_attendance, pa.int32()),
            pa.array(same_neighbourhood, pa.float32()),
        ],
        schema=contracts.USER_USER_EDGES,
    )


def generate_friend_labels(
    config: WorldConfig, city_id: int, users: pa.Table, interactions: pa.Table, edges: pa.Table
) -> pa.Table:
    """v1: positives from social edges and co-attendance, negatives from random dissimilar pairs.
    Compatible: overlap >= 0.6 or >= 2 co-attendances. Incompatible: overlap < 0.3 and never
    co-attended. Attendance is sampled for compatible pairs with a probability rising with
    overlap and co-attendance, and is 0 for incompatible ones.

    v2: the friendships are the compatible pairs and as many random non-friends the incompatible
    ones, as for any source that declares friendships (`completion.labels_from_friendships`).
    """
    if config.realism.enabled:
        return labels_from_friendships(edges, users, interactions, seed=config.seed * 1000 + city_id)
    rng = config.rng(city_id, "labels")
    tastes = Tastes.from_table(users)
    index_of = pd.Index(tastes.ids)
    co_counts = social.co_attendance_counts(interactions)

    # Candidate positives: every social edge and every pair that co-attended twice or more.
    frequent = co_counts[co_counts["co_attendance_count"] >= contracts.POSITIVE_CO_ATTENDANCE]
    cand_u = np.concatenate([edges.column("user_u").to_numpy(), frequent["user_u"].to_numpy()])
    cand_v = np.concatenate([edges.column("user_v").to_numpy(), frequent["user_v"].to_numpy()])
    pairs = np.unique(np.stack([cand_u, cand_v], axis=1), axis=0) if len(cand_u) else np.empty((0, 2), np.int64)
    pu, pv = pairs[:, 0], pairs[:, 1]
    overlap = social.pair_cosine(tastes.fine_unit, index_of.get_indexer(pu), index_of.get_indexer(pv))
    co = social.lookup_pair_counts(co_counts, pu, pv)
    positive = social.compatibility_label(overlap, co) == 1
    pu, pv, overlap, co = pu[positive], pv[positive], overlap[positive], co[positive]
    attend = rng.random(len(pu)) < social.attendance_probability(overlap, co)

    nu, nv = _sample_negatives(rng, tastes, co_counts, int(round(len(pu) * config.negatives_per_positive)))
    frame = pd.DataFrame(
        {
            "user_u": np.concatenate([pu, nu]),
            "user_v": np.concatenate([pv, nv]),
            "label_compat": np.concatenate([np.ones(len(pu)), np.zeros(len(nu))]).astype(np.int32),
            "label_attend": np.concatenate([attend, np.zeros(len(nu), bool)]).astype(np.int32),
        }
    ).sort_values(["user_u", "user_v"], kind="stable")
    return pa.Table.from_pandas(frame, schema=contracts.FRIEND_LABELS, preserve_index=False)


def _sample_negatives(
    rng: np.random.Generator, tastes: Tastes, co_counts: pd.DataFrame, wanted: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random distinct pairs of the city with low overlap that never co-attended."""
    n = len(tastes.ids)
    if wanted == 0 or n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a = rng.integers(0, n, size=4 * wanted + 100)
    b = rng.integers(0, n, size=len(a))
    a, b = np.minimum(a, b), np.maximum(a, b)
    keep = a != b
    a, b = a[keep], b[keep]
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    first.sort()  # keep draw order so the result does not depend on id sorting
    a, b = a[first], b[first]
    u, v = tastes.ids[a], tastes.ids[b]
    label = social.compatibility_label(
        social.pair_cosine(tastes.fine_unit, a, b), social.lookup_pair_counts(co_counts, u, v)
    )
    keep = np.flatnonzero(label == 0)[:wanted]
    return u[keep], v[keep]
