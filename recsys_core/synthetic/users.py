"""Synthetic users of one city: tastes, vibes, frequented neighbourhoods, activity, a first name."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from recsys_core import contracts
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.names import user_names
from recsys_core.synthetic.places import TAG_CATEGORY_ONE_HOT
from recsys_core.synthetic.sampling import top_k_mask
from recsys_core.taxonomy import C_COARSE, C_VIBE, N_NEIGHBORHOODS_PER_CITY, VIBE_CATEGORY_AFFINITY, VIBE_TAGS

# (6, 30): 1 where a vibe goes with a category.
_VIBE_AFFINITY = np.zeros((C_COARSE, C_VIBE), dtype=np.float64)
for _cat, _vibes in VIBE_CATEGORY_AFFINITY.items():
    _VIBE_AFFINITY[_cat, [VIBE_TAGS.index(v) for v in _vibes]] = 1.0

BEHAVIOUR_RANGES = {
    "avg_sessions_per_week": (1.0, 8.0),
    "avg_views_per_session": (10.0, 80.0),
    "avg_likes_per_session": (0.5, 5.0),
    "avg_saves_per_session": (0.2, 3.0),
    "avg_attends_per_month": (1.0, 12.0),
}


def generate_users(config: WorldConfig, city_id: int) -> pa.Table:
    rng = config.rng(city_id, "users")
    lo, hi = config.user_id_range(city_id)
    n = hi - lo

    home = rng.integers(0, N_NEIGHBORHOODS_PER_CITY, size=n)
    cat_pref = rng.dirichlet(np.full(C_COARSE, config.category_concentration), size=n)
    # Fine tastes concentrate on the tags of the categories the user likes.
    alpha_fine = 0.03 + 4.0 * (cat_pref @ TAG_CATEGORY_ONE_HOT.T) / TAG_CATEGORY_ONE_HOT.sum(axis=0).mean()
    fine_pref = _dirichlet_rows(rng, alpha_fine)

    # 3-10 vibes, leaning towards those that go with the user's categories.
    vibe_keys = np.log(rng.random((n, C_VIBE))) / (0.2 + 3.0 * cat_pref @ _VIBE_AFFINITY)
    vibes = top_k_mask(vibe_keys, rng.integers(3, 11, size=n))
    vibe_weights = np.where(vibes, rng.exponential(1.0, size=(n, C_VIBE)), 0.0)
    vibe_pref = vibe_weights / vibe_weights.sum(axis=1, keepdims=True)

    # 1-3 frequented neighbourhoods, the home one always among them.
    n_areas = rng.integers(1, 4, size=n)
    area_keys = rng.random((n, N_NEIGHBORHOODS_PER_CITY))
    area_keys[np.arange(n), home] = 2.0
    areas = top_k_mask(area_keys, n_areas)
    area_weights = np.where(areas, rng.gamma(3.0, size=areas.shape), 0.0)
    area_weights /= area_weights.sum(axis=1, keepdims=True)
    area_rows, area_keys_flat = np.nonzero(areas)

    behaviour = {name: rng.uniform(a, b, size=n) for name, (a, b) in BEHAVIOUR_RANGES.items()}

    area_freqs = pa.MapArray.from_arrays(  # type: ignore[call-overload]  # stubs: int64 offsets; maps use int32
        pa.array(np.concatenate([[0], np.cumsum(n_areas)]), pa.int32()),
        pa.array(area_keys_flat, pa.int32()),
        pa.array(area_weights[area_rows, area_keys_flat], pa.float32()),
    )
    table = pa.Table.from_arrays(
        [
            pa.array(np.arange(lo, hi), pa.int64()),
            pa.array(np.full(n, city_id), pa.int32()),
            pa.array(home, pa.int32()),
            contracts.matrix_to_list_array(_as_f32_simplex(cat_pref)),
            contracts.matrix_to_list_array(_as_f32_simplex(fine_pref)),
            contracts.matrix_to_list_array(_as_f32_simplex(vibe_pref)),
            area_freqs,
            *(pa.array(v, pa.float32()) for v in behaviour.values()),
        ],
        schema=contracts.USERS,
    )
    return table.append_column(contracts.DISPLAY_NAME, user_names(config, city_id, n))  # the optional column


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Dirichlet draws with a different concentration vector per row."""
    g = rng.gamma(alpha)
    g = np.maximum(g, 1e-12)
    rows: NDArray[np.float64] = g / g.sum(axis=1, keepdims=True)
    return rows


def _as_f32_simplex(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float32)
    simplex: NDArray[np.float32] = p / p.sum(axis=1, keepdims=True)
    return simplex
