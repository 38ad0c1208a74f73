"""Configuration of the synthetic world, validated up front with every problem named."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recsys_core.taxonomy import N_CITIES


class ConfigError(ValueError):
    """A world configuration that cannot produce a valid world; the message lists why."""


@dataclass(frozen=True)
class PreferenceWeights:
    """Weights of the generator's true preference score (the oracle) and its temperature.

    score(u, p) = interest * cos(fine_pref_u, tags_p) + category * <cat_pref_u, cats_p>
                  + location * area_freqs_u[neighbourhood_p] (home city only)
                  + popularity * log1p(base_popularity_p) / 5
    Visits are sampled from softmax(score / temperature) over the candidate places. A low
    temperature makes who-visits-what predictable from the features.
    """

    interest: float = 0.45
    category: float = 0.25
    location: float = 0.2
    popularity: float = 0.1
    temperature: float = 0.05


@dataclass(frozen=True)
class WorldConfig:
    n_users: int = 10_000
    n_places: int = 10_000
    n_cities: int = N_CITIES
    seed: int = 42
    weeks: int = 12
    start_date: str = "2024-01-01"
    preference: PreferenceWeights = field(default_factory=PreferenceWeights)
    # Dirichlet concentration of coarse-category taste: lower = more opinionated users.
    category_concentration: float = 0.5
    # Events per user = sessions/week * weeks * views/session * events_per_view, clipped.
    events_per_view: float = 0.1
    events_per_user_range: tuple[int, int] = (50, 500)
    travel_share: float = 0.05
    social_top_k: int = 20
    social_min_overlap: float = 0.3
    # Expected joint outings of a similar pair per unit of interest overlap.
    joint_outing_rate: float = 1.5
    negatives_per_positive: float = 1.0

    def validate(self) -> WorldConfig:
        problems = []
        for name in ("n_users", "n_places", "n_cities", "seed", "weeks", "social_top_k"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                problems.append(f"{name} must be an integer, got {value!r}")
        if problems:
            raise ConfigError("invalid world config: " + "; ".join(problems))
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if len(self.events_per_user_range) != 2:
            raise ConfigError(
                f"invalid world config: events_per_user_range must be (lo, hi), got {self.events_per_user_range!r}"
            )
        if not 1 <= self.n_cities <= N_CITIES:
            problems.append(f"n_cities must be in 1..{N_CITIES}, got {self.n_cities}")
        if self.n_users < 10 * max(self.n_cities, 1):
            problems.append(f"n_users must be at least 10 per city, got {self.n_users}")
        if self.n_places < 10 * max(self.n_cities, 1):
            problems.append(f"n_places must be at least 10 per city, got {self.n_places}")
        if self.weeks < 1:
            problems.append(f"weeks must be >= 1, got {self.weeks}")
        try:
            if not isinstance(self.start_date, str) or np.isnat(np.datetime64(self.start_date, "D")):
                raise ValueError
        except ValueError:
            problems.append(f"start_date must be YYYY-MM-DD, got {self.start_date!r}")
        p = self.preference
        if not p.temperature > 0:
            problems.append(f"preference.temperature must be > 0, got {p.temperature}")
        weights = (p.interest, p.category, p.location, p.popularity)
        if min(weights) < 0 or sum(weights) <= 0:
            problems.append(f"preference weights must be >= 0 and not all 0, got {weights}")
        if not self.category_concentration > 0:
            problems.append("category_concentration must be > 0")
        lo, hi = self.events_per_user_range
        if not 1 <= lo <= hi:
            problems.append(f"events_per_user_range must satisfy 1 <= lo <= hi, got {(lo, hi)}")
        if not self.events_per_view > 0:
            problems.append("events_per_view must be > 0")
        if not 0 <= self.travel_share < 1:
            problems.append(f"travel_share must be in [0, 1), got {self.travel_share}")
        if self.travel_share > 0 and self.n_cities < 2:
            problems.append("travel_share > 0 needs at least 2 cities")
        if self.social_top_k < 1:
            problems.append("social_top_k must be >= 1")
        if not 0 <= self.social_min_overlap <= 1:
            problems.append("social_min_overlap must be in [0, 1]")
        if self.joint_outing_rate < 0 or self.negatives_per_positive < 0:
            problems.append("joint_outing_rate and negatives_per_positive must be >= 0")
        if problems:
            raise ConfigError("invalid world config: " + "; ".join(problems))
        return self

    def replace(self, **changes: Any) -> WorldConfig:
        return dataclasses.replace(self, **changes)

    @property
    def city_weights(self) -> np.ndarray:
        """Share of users and places per city: skewed, some cities larger, fixed by the seed."""
        rng = np.random.default_rng([self.seed, 9999])
        return rng.dirichlet(np.full(self.n_cities, 4.0))

    def _allocate(self, total: int) -> np.ndarray:
        """Largest-remainder split of `total` over the cities, at least 10 each."""
        floor = 10
        share = self.city_weights * (total - floor * self.n_cities)
        counts: NDArray[np.int64] = np.floor(share).astype(np.int64)
        remainder = share - counts
        counts[np.argsort(-remainder, kind="stable")[: total - floor * self.n_cities - counts.sum()]] += 1
        return counts + floor

    def user_id_range(self, city_id: int) -> tuple[int, int]:
        return _id_range(self._allocate(self.n_users), city_id)

    def place_id_range(self, city_id: int) -> tuple[int, int]:
        return _id_range(self._allocate(self.n_places), city_id)

    def rng(self, city_id: int, stream: str) -> np.random.Generator:
        """An independent generator per (seed, city, table) so cities build in any order."""
        streams = ("places", "users", "interactions", "social", "labels")
        return np.random.default_rng([self.seed, city_id, streams.index(stream)])


def _id_range(counts: np.ndarray, city_id: int) -> tuple[int, int]:
    start = int(counts[:city_id].sum())
    return start, start + int(counts[city_id])
