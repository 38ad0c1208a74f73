"""World v2's hidden signal: what behaviour follows and no profile column holds.

- Hidden appeal: per place a latent vector, a scalar quality, and the day it opens.
- Friendships: each user picks friends among random users of the home city, more likely with a
  similar hidden taste or the same home neighbourhood (homophily in forming ties).
- Hidden tastes: per user a latent vector at the start of the weeks and one it drifts towards,
  each mixed with the friends' mean (tastes spread along ties).
- Late joiners: users whose first day is near the end of the weeks.

`TruePreference` adds the hidden part to the observed one (`preference.preference_scores`),
scaled so that it explains `Realism.hidden_share` of the score variance. Everything is a pure
function of the config and the world's tables (each with its own random stream), so the
generator's per-city steps, the Dagster assets that run them one at a time, and the oracle
recompute the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.preference import Tastes, Traits, preference_scores
from recsys_core.synthetic.sampling import top_k_mask

PERIOD_DAYS = 7  # tastes, open places and late joins move week by week (the generator samples per week)
SCALE_SAMPLE_USERS = 512  # users whose observed scores set a city's hidden scale (deterministic sample)
CLOSED = -1e9  # the score of a place that has not opened yet (finite: metrics stay defined)
F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Appeal:
    """Per place (rows of the places table): hidden appeal and the day it opens."""

    vector: F32  # (n_places, d)
    quality: F32  # (n_places,)
    opens_day: NDArray[np.int64]  # a multiple of PERIOD_DAYS; 0 = open from the start


def place_appeal(config: WorldConfig, places: pa.Table) -> Appeal:
    """Each city's places in id order draw from the city's own stream."""
    r, n = config.realism, places.num_rows
    ids, cities = places.column("place_id").to_numpy(), places.column("city_id").to_numpy()
    vector = np.zeros((n, r.hidden_dim), np.float32)
    quality = np.zeros(n, np.float32)
    opens = np.zeros(n, np.int64)
    for city in np.unique(cities):
        rows = np.flatnonzero(cities == city)
        rows = rows[np.argsort(ids[rows], kind="stable")]
        rng = config.rng(int(city), "appeal")
        vector[rows] = rng.standard_normal((len(rows), r.hidden_dim))
        quality[rows] = rng.standard_normal(len(rows))
        new = rng.random(len(rows)) < r.new_place_share
        opens[rows] = np.where(new, rng.integers(1, config.weeks, size=len(rows)) * PERIOD_DAYS, 0)
    return Appeal(vector, quality, opens)


def _base_tastes(config: WorldConfig, city: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start tastes, drift targets, late-joiner flags) before they spread along friendships."""
    rng = config.rng(city, "hidden")
    d = config.realism.hidden_dim
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)), rng.random(n) < config.realism.late_join_share


def _city_users(users: pa.Table) -> int:
    cities = np.unique(users.column("home_city_id").to_numpy())
    if len(cities) != 1:
        raise ValueError(f"expected the users of one city, got cities {cities.tolist()}")
    if not np.all(np.diff(users.column("user_id").to_numpy()) > 0):
        raise ValueError("expected a city's users sorted by user_id (the order they were generated in)")
    return int(cities[0])


FRIEND_BLOCK = 1024  # users per block when friends are chosen (n x candidates x d per block)


def friendships(config: WorldConfig, users: pa.Table) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Friend pairs (a < b, rows of `users`, one city's in id order). Each user proposes a Poisson
    number of ties (mean friends_per_user / 2, so the mean degree is friends_per_user) among random
    same-city candidates, by a Gumbel top-k on hidden-taste similarity, a shared home area and
    observed interests."""
    r, n = config.realism, users.num_rows
    empty = np.zeros(0, np.int64)
    if r.friends_per_user <= 0 or n < 2:
        return empty, empty
    city = _city_users(users)
    start, _, _ = _base_tastes(config, city, n)
    home = users.column("home_neighborhood_id").to_numpy()
    interests = Tastes.from_table(users).fine_unit
    rng = config.rng(city, "friendships")
    m = min(r.friend_candidates, n - 1)
    proposals = np.minimum(rng.poisson(r.friends_per_user / 2, size=n), m)
    heads, tails = [], []
    for lo in range(0, n, FRIEND_BLOCK):
        rows = np.arange(lo, min(lo + FRIEND_BLOCK, n))
        candidates = (rows[:, None] + rng.integers(1, n, size=(len(rows), m))) % n  # never the user
        similarity = np.einsum("ud,ucd->uc", start[rows], start[candidates]) / np.sqrt(r.hidden_dim)
        keys = (
            r.friend_taste_bias * similarity
            + r.friend_area_bias * (home[rows, None] == home[candidates])
            + r.friend_interest_bias * np.einsum("ud,ucd->uc", interests[rows], interests[candidates])
        )
        keys = keys + rng.gumbel(size=keys.shape)
        chosen = top_k_mask(keys, proposals[rows])
        heads.append(np.repeat(rows, chosen.sum(axis=1)))
        tails.append(candidates[chosen])
    a, b = np.concatenate(heads), np.concatenate(tails)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _spread(tastes: np.ndarray, adjacency: sp.csr_matrix, homophily: float) -> F32:
    """Each user's taste mixed with the friends' mean, then every dimension back to unit variance."""
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    friends_mean = (adjacency @ tastes) / np.maximum(degree, 1)[:, None]
    mixed = np.where(degree[:, None] > 0, (1 - homophily) * tastes + homophily * friends_mean, tastes)
    out: F32 = (mixed / np.maximum(mixed.std(axis=0), 1e-6)).astype(np.float32)
    return out


@dataclass(frozen=True)
class HiddenTastes:
    """Per user of one city: hidden taste at the start, the taste it drifts towards, first day,
    and the friendships the tastes spread along (`friendships`, rows of the city's users)."""

    start: F32  # (n, d)
    target: F32  # (n, d)
    join_day: NDArray[np.int64]  # 0, or the first day of the late-join window
    friends: tuple[NDArray[np.int64], NDArray[np.int64]]


def tastes_on(start: np.ndarray, target: np.ndarray, day: float, config: WorldConfig) -> F32:
    """The tastes on `day`: turned from start towards target by drift * 90 degrees over the weeks
    (for independent Gaussian start and target, every day's taste is Gaussian too)."""
    angle = config.realism.drift * (np.pi / 2) * day / (config.weeks * 7)
    out: F32 = (np.cos(angle) * start + np.sin(angle) * target).astype(np.float32)
    return out


def late_join_day(config: WorldConfig) -> int:
    """The first day of the late joiners: the last `late_join_days`, whole weeks."""
    weeks = -(-config.realism.late_join_days // PERIOD_DAYS)
    return (config.weeks - weeks) * PERIOD_DAYS


def hidden_tastes(config: WorldConfig, users: pa.Table) -> HiddenTastes:
    r, n = config.realism, users.num_rows
    city = _city_users(users)
    start, target, late = _base_tastes(config, city, n)
    a, b = friendships(config, users)
    adjacency = sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    join = np.where(late, late_join_day(config), 0).astype(np.int64)
    spread = (_spread(start, adjacency, r.homophily), _spread(target, adjacency, r.homophily))
    return HiddenTastes(*spread, join, (a, b))


class TruePreference:
    """The generator's preference of users for places on any day: the observed part plus the
    hidden one, which explains `hidden_share` of the variance (scaled per home city against the
    observed scores' spread). Places that have not opened score `CLOSED`."""

    def __init__(self, config: WorldConfig, users: pa.Table, places: pa.Table):
        self.config = config
        self.tastes = Tastes.from_table(users)
        self.traits = Traits.from_table(places)
        self.appeal = place_appeal(config, places)
        n, d = users.num_rows, config.realism.hidden_dim
        self.start, self.target = np.zeros((n, d), np.float32), np.zeros((n, d), np.float32)
        self.join_day = np.zeros(n, np.int64)
        self.scale = np.zeros(n, np.float32)
        self.friends: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per city, rows of `users`
        share = config.realism.hidden_share
        for city in np.unique(self.tastes.city):
            rows = np.flatnonzero(self.tastes.city == city)
            rows = rows[np.argsort(self.tastes.ids[rows], kind="stable")]
            hidden = hidden_tastes(config, users.take(rows))
            self.start[rows], self.target[rows], self.join_day[rows] = hidden.start, hidden.target, hidden.join_day
            self.friends[int(city)] = (rows[hidden.friends[0]], rows[hidden.friends[1]])
            home = np.flatnonzero(self.traits.city == city)
            sample = rows[:SCALE_SAMPLE_USERS]
            observed = preference_scores(self.tastes.subset(sample), self.traits.subset(home), config.preference)
            self.scale[rows] = float(observed.std()) * np.sqrt(share / (1 - share))

    def tastes_at(self, users: np.ndarray, day: float) -> F32:
        return tastes_on(self.start[users], self.target[users], day, self.config)

    def hidden(self, users: np.ndarray, places: np.ndarray, day: float) -> F32:
        """Unit-variance hidden score: taste x appeal, and the place's quality."""
        q = self.config.realism.quality_share
        taste = self.tastes_at(users, day) @ self.appeal.vector[places].T / np.sqrt(self.config.realism.hidden_dim)
        out: F32 = (np.sqrt(1 - q) * taste + np.sqrt(q) * self.appeal.quality[places][None, :]).astype(np.float32)
        return out

    def observed(self, users: np.ndarray, places: np.ndarray) -> F32:
        out: F32 = preference_scores(self.tastes.subset(users), self.traits.subset(places), self.config.preference)
        return out

    def scores(self, users: np.ndarray, places: np.ndarray, day: float, observed: np.ndarray | None = None) -> F32:
        """(len(users), len(places)) true preference on `day` (indices are rows of the tables;
        `observed`: their observed part, where the caller keeps it across days)."""
        observed = self.observed(users, places) if observed is None else observed
        total = observed + self.scale[users, None] * self.hidden(users, places, day)
        out: F32 = np.where(self.appeal.opens_day[places][None, :] <= day, total, CLOSED).astype(np.float32)
        return out
