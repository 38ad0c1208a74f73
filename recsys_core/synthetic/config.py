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


WORLD_VERSIONS = ("v2", "v1")


@dataclass(frozen=True)
class Realism:
    """What world v2 adds to the feature-driven world (`Realism.off()` is that world, v1).

    In v1 the true preference is a function of the profile columns alone, every user has 50+
    events spread evenly over the weeks, and the social edges are drawn from profile similarity,
    so a model of the features alone matches the oracle. v2 gives behaviour signal that no
    column holds (`synthetic.hidden`): hidden tastes and appeal, friendships formed on and
    spreading those tastes, joint outings chosen by both friends, heavy-tailed activity, late
    joiners, places that open during the weeks, and tastes that drift.
    """

    hidden_share: float = 0.4  # share of the preference's variance from hidden tastes x hidden appeal
    hidden_dim: int = 8
    quality_share: float = 0.25  # of the hidden part: a place's scalar appeal (the rest: taste x appeal)
    friends_per_user: float = 8.0  # mean friendships per user (social edges are friendships in v2)
    friend_candidates: int = 256  # random same-city users each user chooses friends among
    friend_taste_bias: float = 2.0  # how strongly hidden-taste similarity makes friends (homophily in forming)
    friend_area_bias: float = 1.0  # ... sharing a home neighbourhood
    friend_interest_bias: float = 2.0  # ... and observed interests (cosine of fine_pref)
    homophily: float = 0.5  # weight of the friends' mean in each user's hidden taste (tastes spread)
    outings_per_friendship: float = 0.5  # joint outings per friendship, at a place both would choose
    median_events: float = 6.0  # lognormal events per user: many with 1-10, a few with hundreds
    activity_sigma: float = 1.3
    late_join_share: float = 0.08  # users whose every event falls in the last `late_join_days`
    late_join_days: int = 14
    new_place_share: float = 0.08  # places that open during the weeks (no event before they open)
    drift: float = 0.3  # how far hidden tastes turn over the weeks (1: to an independent taste)

    @classmethod
    def off(cls) -> Realism:
        """World v1: none of it."""
        return cls(
            hidden_share=0.0,
            friends_per_user=0.0,
            homophily=0.0,
            outings_per_friendship=0.0,
            activity_sigma=0.0,
            late_join_share=0.0,
            new_place_share=0.0,
            drift=0.0,
        )

    @property
    def enabled(self) -> bool:
        return self != Realism.off()

    def problems(self, weeks: int) -> list[str]:
        out = []
        for name in ("hidden_share", "late_join_share", "new_place_share", "homophily", "quality_share"):
            if not 0 <= getattr(self, name) < 1:
                out.append(f"realism.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.drift <= 1:
            out.append(f"realism.drift must be in [0, 1], got {self.drift}")
        if self.hidden_dim < 1 or self.friend_candidates < 1:
            out.append("realism.hidden_dim and realism.friend_candidates must be >= 1")
        for name in ("friends_per_user", "outings_per_friendship", "activity_sigma", "friend_taste_bias"):
            if getattr(self, name) < 0:
                out.append(f"realism.{name} must be >= 0, got {getattr(self, name)}")
        if self.enabled and not self.median_events >= 1:
            out.append(f"realism.median_events must be >= 1, got {self.median_events}")
        if self.late_join_share > 0 and not 7 <= self.late_join_days < 7 * weeks:
            out.append(f"realism.late_join_days must be in [7, {7 * weeks}), got {self.late_join_days}")
        return out


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
    events_per_user_range: tuple[int, int] = (1, 500)  # v1: (50, 500)
    travel_share: float = 0.05
    social_top_k: int = 20
    social_min_overlap: float = 0.3
    # Expected joint outings of a similar pair per unit of interest overlap.
    joint_outing_rate: float = 1.5
    negatives_per_positive: float = 1.0
    realism: Realism = field(default_factory=Realism)

    @classmethod
    def of_version(cls, version: str, **changes: Any) -> WorldConfig:
        """World `v2` (the default) or `v1`, with `changes`."""
        if version not in WORLD_VERSIONS:
            raise ConfigError(f"unknown world version {version!r}; known: {', '.join(WORLD_VERSIONS)}")
        return cls.v1(**changes) if version == "v1" else cls(**changes)

    @property
    def edges_are_friendships(self) -> bool:
        """v2's social edges are friendships; v1's are similar neighbours."""
        return self.realism.enabled and self.realism.friends_per_user > 0

    @classmethod
    def v1(cls, **changes: Any) -> WorldConfig:
        """The feature-driven world of earlier rounds: profile-only preference, 50+ events per user."""
        defaults: dict[str, Any] = {"realism": Realism.off(), "events_per_user_range": (50, 500)}
        return cls(**(defaults | changes))

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
        problems += self.realism.problems(self.weeks)
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
        # New streams go last: a stream's position is its seed, so the others keep theirs.
        streams = ("places", "users", "interactions", "social", "labels", "hidden", "friendships", "appeal", "names")
        return np.random.default_rng([self.seed, city_id, streams.index(stream)])


def _id_range(counts: np.ndarray, city_id: int) -> tuple[int, int]:
    start = int(counts[:city_id].sum())
    return start, start + int(counts[city_id])
