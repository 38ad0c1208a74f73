"""Synthetic places of one city: categories, tags, price, time slot, popularity."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys_core import contracts
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.sampling import sample_rows, top_k_mask
from recsys_core.taxonomy import (
    C_COARSE,
    C_FINE,
    CLUBS,
    CULTURE,
    DINING,
    ENTERTAINMENT,
    EXPENSIVE_CITIES,
    FINE_TAG_CATEGORY,
    N_NEIGHBORHOODS_PER_CITY,
    OUTDOORS,
    SPORTS,
)

# P(time slot | primary category): clubs live at night, outdoors in the morning, ...
_SLOT_BY_CATEGORY = {
    ENTERTAINMENT: (0.02, 0.13, 0.35, 0.2, 0.1, 0.2),
    SPORTS: (0.35, 0.15, 0.3, 0.0, 0.2, 0.0),
    CLUBS: (0.0, 0.0, 0.15, 0.4, 0.0, 0.45),
    DINING: (0.2, 0.25, 0.3, 0.05, 0.15, 0.05),
    OUTDOORS: (0.35, 0.2, 0.05, 0.0, 0.4, 0.0),
    CULTURE: (0.1, 0.35, 0.3, 0.0, 0.25, 0.0),
}
_PRICE_EXPENSIVE = (0.0, 0.0, 0.3, 0.5, 0.2)
_PRICE_NORMAL = (0.3, 0.4, 0.2, 0.1, 0.0)

TAG_CATEGORY_ONE_HOT = np.eye(C_COARSE, dtype=np.float32)[list(FINE_TAG_CATEGORY)]  # (100, 6)


def generate_places(config: WorldConfig, city_id: int) -> pa.Table:
    rng = config.rng(city_id, "places")
    lo, hi = config.place_id_range(city_id)
    n = hi - lo

    # Neighbourhoods are not equally lively: a Zipf-like share per neighbourhood.
    liveliness = 1.0 / np.arange(1, N_NEIGHBORHOODS_PER_CITY + 1) ** 0.7
    liveliness = rng.permutation(liveliness / liveliness.sum())
    neighborhood = rng.choice(N_NEIGHBORHOODS_PER_CITY, size=n, p=liveliness)

    n_categories = np.where(rng.random(n) < 0.7, 1, 2)
    categories = top_k_mask(rng.random((n, C_COARSE)), n_categories)  # (n, 6) bool
    primary = np.argmax(categories * rng.random((n, C_COARSE)), axis=1)
    category_one_hot = categories / categories.sum(axis=1, keepdims=True)

    # 3-7 tags drawn from the union of the place's categories' tags.
    allowed = (categories.astype(np.float32) @ TAG_CATEGORY_ONE_HOT.T) > 0  # (n, 100)
    keys = np.where(allowed, rng.random((n, C_FINE)), -1.0)
    chosen = top_k_mask(keys, rng.integers(3, 8, size=n))
    tag_weights = np.where(chosen, rng.exponential(1.0, size=(n, C_FINE)), 0.0)
    fine_tag_vector = tag_weights / tag_weights.sum(axis=1, keepdims=True)

    price_p = np.array(_PRICE_EXPENSIVE if city_id in EXPENSIVE_CITIES else _PRICE_NORMAL)
    price_band = rng.choice(len(price_p), size=n, p=price_p)
    slot_p = np.array([_SLOT_BY_CATEGORY[c] for c in range(C_COARSE)])[primary]
    typical_slot = sample_rows(rng, slot_p)

    base_popularity = rng.lognormal(mean=1.0, sigma=1.0, size=n)
    avg_daily_visits = base_popularity * rng.uniform(0.8, 1.2, size=n) * 10
    conversion_rate = np.clip(rng.beta(2, 5, size=n) * np.minimum(base_popularity / 10, 1.0) + 0.02, 0.02, 0.95)
    novelty_score = 1.0 / (1.0 + np.log1p(base_popularity))

    category_ids = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(n_categories)]), pa.int32()),
        pa.array(np.nonzero(categories)[1], pa.int32()),
    )
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(lo, hi), pa.int64()),
            pa.array(np.full(n, city_id), pa.int32()),
            pa.array(neighborhood, pa.int32()),
            category_ids,
            contracts.matrix_to_list_array(category_one_hot.astype(np.float32)),
            contracts.matrix_to_list_array(fine_tag_vector.astype(np.float32)),
            pa.array(price_band, pa.int32()),
            pa.array(typical_slot, pa.int32()),
            pa.array(base_popularity, pa.float32()),
            pa.array(avg_daily_visits, pa.float32()),
            pa.array(conversion_rate, pa.float32()),
            pa.array(novelty_score, pa.float32()),
        ],
        schema=contracts.PLACES,
    )
