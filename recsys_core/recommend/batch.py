"""Every user's top-K places, scored by the service's own code (`places.recommend_places`).

A line of the batch is what `/recommend/places?user_id=...&top_k=K` answers for that user, less
the explanations: the same candidates, the same scores, the same order.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.places import recommend_places
from recsys_core.recommend.queries import PlaceQuery

logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


def batch_schema() -> pa.Schema:
    return pa.schema(
        [
            ("user_id", pa.int64()),
            ("city_id", pa.int32()),
            ("place_ids", pa.list_(pa.int64())),
            ("scores", pa.list_(pa.float64())),
        ]
    )


def batch_places(art: ServingArtifacts, k: int) -> pa.Table:
    """One row per user of the graph: their top `k` places in their home city, best first."""
    n = len(art.user_ids)
    place_ids: list[list[int]] = []
    scores: list[list[float]] = []
    started = last = time.perf_counter()
    for done, user_id in enumerate(art.user_ids.tolist(), start=1):
        results = recommend_places(art, PlaceQuery(user_id=user_id, top_k=k), explain=False)
        place_ids.append([r.place_id for r in results])
        scores.append([r.score for r in results])
        now = time.perf_counter()
        if now - last > LOG_EVERY_S and done < n:
            rate = done / (now - started)
            logger.info(
                "batch recommendations: %d/%d users (%.0f users/s, ETA %.0fs)", done, n, rate, (n - done) / rate
            )
            last = now
    logger.info("batch recommendations: %d users in %.1fs", n, time.perf_counter() - started)
    return pa.Table.from_arrays(
        [
            pa.array(art.user_ids, pa.int64()),
            pa.array(art.user_city.astype(np.int32)),
            pa.array(place_ids, pa.list_(pa.int64())),
            pa.array(scores, pa.list_(pa.float64())),
        ],
        schema=batch_schema(),
    )
