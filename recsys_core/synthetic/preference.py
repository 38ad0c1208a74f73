"""The generator's true preference score: the oracle that models are measured against.

It is a deterministic function of the world tables, so the oracle can be recomputed for
any (user, place) block from `users` and `places` alone, without keeping a 10k x 10k matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from recsys_core import contracts
from recsys_core.social import unit_rows
from recsys_core.synthetic.config import PreferenceWeights
from recsys_core.taxonomy import N_NEIGHBORHOODS_PER_CITY


@dataclass(frozen=True)
class Tastes:
    """Dense per-user arrays the preference score needs."""

    ids: np.ndarray
    city: np.ndarray
    fine_unit: np.ndarray  # fine_pref scaled to unit length (cosine numerator)
    cat: np.ndarray
    area: np.ndarray  # (n, 15) frequented-neighbourhood weights in the home city

    @classmethod
    def from_table(cls, users: pa.Table) -> Tastes:
        return cls(
            ids=users.column("user_id").to_numpy(),
            city=users.column("home_city_id").to_numpy(),
            fine_unit=unit_rows(contracts.list_matrix(users, "fine_pref")),
            cat=contracts.list_matrix(users, "cat_pref"),
            area=contracts.map_matrix(users, "area_freqs", N_NEIGHBORHOODS_PER_CITY),
        )

    def subset(self, index: np.ndarray) -> Tastes:
        return Tastes(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class Traits:
    """Dense per-place arrays the preference score needs."""

    ids: np.ndarray
    city: np.ndarray
    neighborhood: np.ndarray
    tags_unit: np.ndarray
    cat: np.ndarray
    popularity: np.ndarray  # log1p(base_popularity) / 5
    slot: np.ndarray  # typical time slot

    @classmethod
    def from_table(cls, places: pa.Table) -> Traits:
        return cls(
            ids=places.column("place_id").to_numpy(),
            city=places.column("city_id").to_numpy(),
            neighborhood=places.column("neighborhood_id").to_numpy(),
            tags_unit=unit_rows(contracts.list_matrix(places, "fine_tag_vector")),
            cat=contracts.list_matrix(places, "category_one_hot"),
            popularity=(np.log1p(places.column("base_popularity").to_numpy()) / 5.0).astype(np.float32),
            slot=places.column("typical_time_slot").to_numpy(),
        )

    def subset(self, index: np.ndarray) -> Traits:
        return Traits(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def preference_scores(tastes: Tastes, traits: Traits, weights: PreferenceWeights) -> np.ndarray:
    """(n_users, n_places) true preference scores; location counts only in the home city."""
    same_city = tastes.city[:, None] == traits.city[None, :]
    location = tastes.area[:, traits.neighborhood] * same_city
    scores: NDArray[np.float32] = (
        weights.interest * (tastes.fine_unit @ traits.tags_unit.T)
        + weights.category * (tastes.cat @ traits.cat.T)
        + weights.location * location
        + weights.popularity * traits.popularity[None, :]
    ).astype(np.float32)
    return scores
