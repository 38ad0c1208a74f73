"""World v2's events of one city, sampled week by week from the true preference of that week.

Each user has a heavy-tailed number of events (lognormal, loosely following the profile's
activity columns), spread over the weeks from the user's first day (late joiners: only the last
weeks). In each week a user picks places by softmax(true preference / temperature) over the
home city's places open that week, with tastes as they have drifted by then; a travel share goes
to another city's places. Friends go out together: each friendship has a Poisson number of joint
outings, each at a place drawn from the mean of both friends' preferences (so one friend's
hidden taste shows in the other's history).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.hidden import CLOSED, PERIOD_DAYS, TruePreference
from recsys_core.synthetic.sampling import sample_many_per_row, softmax_rows

ACTIVITY_PROFILE_WEIGHT = 0.5  # correlation of log activity with the profile's sessions x views


@dataclass(frozen=True)
class Events:
    """Sampled events before engagement and timestamps are drawn."""

    user_row: NDArray[np.int64]
    place: NDArray[np.int64]  # rows of the places table
    score: NDArray[np.float32]  # the user's true preference for the place then
    day: NDArray[np.int64]  # the forced day of a joint outing, else -1
    hour: NDArray[np.int64]  # the forced hour of a joint outing, else -1
    week: NDArray[np.int64] | None  # every event's week (None: days chosen over all weeks)
    lo: NDArray[np.float32]  # per user: the lowest and highest home-city score (affinity scale)
    hi: NDArray[np.float32]


def _event_counts(config: WorldConfig, rng: np.random.Generator, users: pa.Table, span_weeks: np.ndarray) -> np.ndarray:
    """Lognormal events per user, scaled by the share of the weeks the user is around."""
    r = config.realism
    activity = np.log(
        users.column("avg_sessions_per_week").to_numpy() * users.column("avg_views_per_session").to_numpy()
    )
    z = (activity - activity.mean()) / max(float(activity.std()), 1e-6)
    noise = rng.standard_normal(len(z))
    mixed = ACTIVITY_PROFILE_WEIGHT * z + np.sqrt(1 - ACTIVITY_PROFILE_WEIGHT**2) * noise
    counts = np.exp(np.log(r.median_events) + r.activity_sigma * mixed) * span_weeks / config.weeks
    lo, hi = config.events_per_user_range
    out: np.ndarray = np.clip(np.rint(counts), lo, hi).astype(np.int64)
    return out


def weekly_events(
    config: WorldConfig, city_id: int, rng: np.random.Generator, users: pa.Table, places: pa.Table
) -> Events:
    truth = TruePreference(config, users, places)
    n, weeks = users.num_rows, config.weeks
    first_week = truth.join_day // PERIOD_DAYS
    counts = _event_counts(config, rng, users, weeks - first_week)
    # Every event's week, uniform over the user's weeks; a travel share goes elsewhere.
    user_of = np.repeat(np.arange(n), counts)
    week_of = first_week[user_of] + (rng.random(len(user_of)) * (weeks - first_week[user_of])).astype(np.int64)
    travel = rng.random(len(user_of)) < config.travel_share if config.n_cities > 1 else np.zeros(len(user_of), bool)
    home = np.flatnonzero(truth.traits.city == city_id)
    away = np.flatnonzero(truth.traits.city != city_id)
    empty = np.zeros(0, np.int64)
    a, b = truth.friends.get(city_id, (empty, empty))  # the friendships the tastes spread along (rows of users)
    outings = rng.poisson(config.realism.outings_per_friendship, size=len(a))
    pair_of = np.repeat(np.arange(len(a)), outings)
    first_pair_day = np.maximum(truth.join_day[a], truth.join_day[b])[pair_of]
    outing_day = first_pair_day + (rng.random(len(pair_of)) * (weeks * PERIOD_DAYS - first_pair_day)).astype(np.int64)
    outing_hour = rng.integers(17, 24, size=len(pair_of))

    mid = weeks * PERIOD_DAYS / 2
    everyone = np.arange(n)
    observed_home, observed_away = truth.observed(everyone, home), truth.observed(everyone, away)  # time-invariant
    lo_hi = truth.scores(everyone, home, mid, observed_home)
    open_mid = lo_hi > CLOSED
    lo = np.where(open_mid, lo_hi, np.inf).min(axis=1).astype(np.float32)
    hi = np.where(open_mid, lo_hi, -np.inf).max(axis=1).astype(np.float32)
    temperature = config.preference.temperature
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = []
    for week in range(weeks):
        day = week * PERIOD_DAYS + PERIOD_DAYS / 2
        for chosen, pool, observed in ((~travel, home, observed_home), (travel, away, observed_away)):
            mine = np.flatnonzero((week_of == week) & chosen)
            if not len(mine) or not len(pool):
                continue
            who, per_user = np.unique(user_of[mine], return_counts=True)
            scores = truth.scores(who, pool, day, observed[who])
            rows, cols = sample_many_per_row(rng, softmax_rows(scores, temperature), per_user)
            unforced = np.full(len(rows), -1)
            parts.append((who[rows], pool[cols], scores[rows, cols], unforced, unforced, week))
        together = np.flatnonzero(outing_day // PERIOD_DAYS == week)
        if len(together):
            left, right = a[pair_of[together]], b[pair_of[together]]
            left_scores = truth.scores(left, home, day, observed_home[left])
            right_scores = truth.scores(right, home, day, observed_home[right])
            once = np.ones(len(together), np.int64)
            _, cols = sample_many_per_row(rng, softmax_rows((left_scores + right_scores) / 2, temperature), once)
            k = np.arange(len(together))
            for who, own in ((left, left_scores), (right, right_scores)):
                parts.append((who, home[cols], own[k, cols], outing_day[together], outing_hour[together], week))
    return Events(
        user_row=np.concatenate([p[0] for p in parts]).astype(np.int64),
        place=np.concatenate([p[1] for p in parts]).astype(np.int64),
        score=np.concatenate([p[2] for p in parts]).astype(np.float32),
        day=np.concatenate([p[3] for p in parts]).astype(np.int64),
        hour=np.concatenate([p[4] for p in parts]).astype(np.int64),
        week=np.concatenate([np.full(len(p[0]), p[5], np.int64) for p in parts]),
        lo=lo,
        hi=hi,
    )
