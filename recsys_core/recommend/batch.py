"""Every user's top-K places (and people, where there is a people model), scored by the service's
own code (`places.recommend_places`, `people.recommend_people`).

A line of the batch is what `/recommend/places?user_id=...&top_k=K` (and `/recommend/people`)
answers for that user, less the explanations: the same candidates, the same scores, the same order.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.people import recommend_people
from recsys_core.recommend.places import recommend_places
from recsys_core.recommend.queries import PeopleQuery, PlaceQuery

logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


def batch_schema(with_people: bool) -> pa.Schema:
    fields = [
        ("user_id", pa.int64()),
        ("city_id", pa.int32()),
        ("place_ids", pa.list_(pa.int64())),
        ("scores", pa.list_(pa.float64())),
    ]
    if with_people:
        fields += [("friend_ids", pa.list_(pa.int64())), ("friend_scores", pa.list_(pa.float64()))]
    return pa.schema(fields)


def batch_places(art: ServingArtifacts, k: int) -> pa.Table:
    """One row per user of the graph: their top `k` places (and people) in their home city, best first."""
    n = len(art.user_ids)
    with_people = art.people_model is not None
    place_ids: list[list[int]] = []
    scores: list[list[float]] = []
    friend_ids: list[list[int]] = []
    friend_scores: list[list[float]] = []
    started = last = time.perf_counter()
    for done, user_id in enumerate(art.user_ids.tolist(), start=1):
        results = recommend_places(art, PlaceQuery(user_id=user_id, top_k=k), explain=False)
        place_ids.append([r.place_id for r in results])
        scores.append([r.score for r in results])
        if with_people:
            people = recommend_people(art, PeopleQuery(user_id=user_id, top_k=k), explain=False)
            friend_ids.append([p.user_id for p in people])
            friend_scores.append([p.compat_score for p in people])
        now = time.perf_counter()
        if now - last > LOG_EVERY_S and done < n:
            rate = done / (now - started)
            logger.info(
                "batch recommendations: %d/%d users (%.0f users/s, ETA %.0fs)", done, n, rate, (n - done) / rate
            )
            last = now
    logger.info("batch recommendations: %d users in %.1fs", n, time.perf_counter() - started)
    columns: list[pa.Array[Any]] = [
        pa.array(art.user_ids, pa.int64()),
        pa.array(art.user_city.astype(np.int32)),
        pa.array(place_ids, pa.list_(pa.int64())),
        pa.array(scores, pa.list_(pa.float64())),
    ]
    if with_people:
        columns += [pa.array(friend_ids, pa.list_(pa.int64())), pa.array(friend_scores, pa.list_(pa.float64()))]
    return pa.Table.from_arrays(columns, schema=batch_schema(with_people))
