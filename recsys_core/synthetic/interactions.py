"""Twelve weeks of user-place events for the users of one city.

Each user visits places sampled from softmax(true preference / temperature) over the home
city, a share of "travel" events goes to one other city, and similar users go out together
(joint outings), which is where co-attendance comes from. Engagement (dwell, likes, saves,
shares, attendance) rises with how much the user likes the place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from recsys_core import contracts
from recsys_core.social import top_similar_pairs
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.events import Events, weekly_events
from recsys_core.synthetic.preference import Tastes, Traits, preference_scores
from recsys_core.synthetic.sampling import sample_many_per_row, softmax_rows
from recsys_core.taxonomy import TIME_SLOTS

# Hours at which each time slot happens; weekend slots also move the day to Sat/Sun.
_SLOT_HOURS = {
    "morning": range(6, 12),
    "afternoon": range(12, 18),
    "evening": range(18, 24),
    "night": range(0, 6),
    "weekend_day": range(10, 18),
    "weekend_night": range(20, 24),
}
_SLOT_FOLLOW_PROB = 0.6


def generate_interactions(config: WorldConfig, city_id: int, users: pa.Table, places: pa.Table) -> pa.Table:
    """Events of `users` (all of one home city) over `places` (every city, for travel)."""
    rng = config.rng(city_id, "interactions")
    tastes = Tastes.from_table(users)
    traits = Traits.from_table(places)
    stats = {name: users.column(name).to_numpy() for name in users.column_names if name.startswith("avg_")}
    if config.realism.enabled:
        events = weekly_events(config, city_id, rng, users, places)
    else:
        events = _v1_events(config, city_id, rng, tastes, traits, stats)
    user_row, place, score, lo_score, hi_score = events.user_row, events.place, events.score, events.lo, events.hi
    joint = events.day >= 0
    affinity = np.clip((score - lo_score[user_row]) / np.maximum(hi_score - lo_score, 1e-6)[user_row], 0.0, 1.0)
    table = _engagement_and_time(
        config, rng, affinity, stats, user_row, joint, events.day, events.hour, traits, place, events.week
    )
    table = table.append_column("user_id", pa.array(tastes.ids[user_row], pa.int64()))
    table = table.append_column("place_id", pa.array(traits.ids[place], pa.int64()))
    table = table.select(contracts.INTERACTIONS.names).cast(contracts.INTERACTIONS)
    return table.sort_by([("user_id", "ascending"), ("timestamp", "ascending")])


def _v1_events(
    config: WorldConfig,
    city_id: int,
    rng: np.random.Generator,
    tastes: Tastes,
    traits: Traits,
    stats: dict[str, np.ndarray],
) -> Events:
    """World v1: events over the home city by the observed preference, travel, and joint outings of
    similar users, on days chosen later (`week` None)."""
    home_places = np.flatnonzero(traits.city == city_id)
    home_scores = preference_scores(tastes, traits.subset(home_places), config.preference)
    home_probs = softmax_rows(home_scores, config.preference.temperature)
    lo_score, hi_score = home_scores.min(axis=1), home_scores.max(axis=1)

    lo, hi = config.events_per_user_range
    n_events = np.clip(
        np.rint(
            stats["avg_sessions_per_week"] * config.weeks * stats["avg_views_per_session"] * config.events_per_view
        ),
        lo,
        hi,
    ).astype(np.int64)
    n_travel = rng.binomial(n_events, config.travel_share)

    rows, cols = sample_many_per_row(rng, home_probs, n_events - n_travel)
    user_rows, place_idx = [rows], [home_places[cols]]
    scores = [home_scores[rows, cols]]

    if n_travel.sum():
        travel_rows, travel_places, travel_scores = _travel_events(config, city_id, rng, tastes, traits, n_travel)
        user_rows.append(travel_rows)
        place_idx.append(travel_places)
        scores.append(travel_scores)

    forced_day = [np.full(sum(len(r) for r in user_rows), -1)]
    forced_hour = [forced_day[0].copy()]
    a, b, overlap = top_similar_pairs(tastes.fine_unit, config.social_top_k, config.social_min_overlap)
    outings = rng.poisson(config.joint_outing_rate * overlap)
    if outings.sum():
        pair, cols = sample_many_per_row(rng, home_probs[a], outings)
        day = rng.integers(0, config.weeks * 7, size=len(pair))
        hour = rng.integers(17, 24, size=len(pair))
        for who in (a[pair], b[pair]):
            user_rows.append(who)
            place_idx.append(home_places[cols])
            scores.append(home_scores[who, cols])
            forced_day.append(day)
            forced_hour.append(hour)

    return Events(
        np.concatenate(user_rows),
        np.concatenate(place_idx),
        np.concatenate(scores),
        np.concatenate(forced_day),
        np.concatenate(forced_hour),
        None,
        lo_score,
        hi_score,
    )


def _travel_events(
    config: WorldConfig,
    city_id: int,
    rng: np.random.Generator,
    tastes: Tastes,
    traits: Traits,
    n_travel: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Each travelling user picks one other city (by its size) and samples places there."""
    others = np.array([c for c in range(config.n_cities) if c != city_id])
    sizes = np.array([np.sum(traits.city == c) for c in others], dtype=float)
    destination = others[rng.choice(len(others), size=len(n_travel), p=sizes / sizes.sum())]
    rows, places, scores = [], [], []
    for dest in np.unique(destination[n_travel > 0]):
        who = np.flatnonzero((destination == dest) & (n_travel > 0))
        dest_places = np.flatnonzero(traits.city == dest)
        dest_scores = preference_scores(tastes.subset(who), traits.subset(dest_places), config.preference)
        r, c = sample_many_per_row(rng, softmax_rows(dest_scores, config.preference.temperature), n_travel[who])
        rows.append(who[r])
        places.append(dest_places[c])
        scores.append(dest_scores[r, c])
    return np.concatenate(rows), np.concatenate(places), np.concatenate(scores)


def _engagement_and_time(
    config: WorldConfig,
    rng: np.random.Generator,
    affinity: NDArray[np.floating[Any]],
    stats: dict[str, np.ndarray],
    user_row: NDArray[np.int64],
    joint: NDArray[np.bool_],
    day: NDArray[np.int64],
    hour: NDArray[np.int64],
    traits: Traits,
    place: NDArray[np.int64],
    week: NDArray[np.int64] | None = None,
) -> pa.Table:
    """Engagement rising with affinity; days and hours following the place's time slot (within the
    event's `week` where the events were sampled week by week)."""
    n = len(affinity)
    likes_rate = stats["avg_likes_per_session"][user_row] / 5.0
    saves_rate = stats["avg_saves_per_session"][user_row] / 3.0
    attend_rate = stats["avg_attends_per_month"][user_row] / 6.5

    dwell = np.clip(15.0 + 240.0 * affinity**1.5 + rng.exponential(30.0, n), 5.0, 900.0)
    num_likes = rng.binomial(3, np.clip(0.6 * affinity * likes_rate, 0, 1))
    num_saves = rng.binomial(2, np.clip(0.5 * affinity * saves_rate, 0, 1))
    num_shares = rng.binomial(2, np.clip(0.15 * affinity, 0, 1))
    attended = joint | (rng.random(n) < np.clip(0.12 * affinity**2 * attend_rate, 0, 0.9))

    # Days and hours: most events happen in the place's typical time slot.
    slot = traits.slot[place]
    follows = rng.random(n) < _SLOT_FOLLOW_PROB
    free_day = rng.integers(0, config.weeks * 7, size=n) if week is None else week * 7 + rng.integers(0, 7, size=n)
    weekend_slot = np.isin(slot, [TIME_SLOTS.index("weekend_day"), TIME_SLOTS.index("weekend_night")])
    week_start = free_day - (free_day % 7)  # start_date is aligned to a Monday below
    slot_day = np.where(weekend_slot, week_start + 5 + rng.integers(0, 2, size=n), free_day)
    slot_hour = _slot_hours(rng, slot)
    day = np.where(joint, day, np.where(follows, slot_day, free_day))
    hour = np.where(joint, hour, np.where(follows, slot_hour, rng.integers(0, 24, size=n)))

    start = np.datetime64(config.start_date, "D")
    start -= (start.astype(np.int64) + 3) % 7  # back to Monday (1970-01-01 was a Thursday)
    days = start.astype(np.int64) + day
    micros = (days * 86_400 + hour * 3600 + rng.integers(0, 3600, size=n)) * 1_000_000
    time_of_day, weekend = contracts.time_buckets(micros)  # the contract's rule, which the checks hold it to

    return pa.table(
        {
            "dwell_time": pa.array(dwell, pa.float32()),
            "num_likes": pa.array(num_likes, pa.int32()),
            "num_saves": pa.array(num_saves, pa.int32()),
            "num_shares": pa.array(num_shares, pa.int32()),
            "attended": pa.array(attended),
            "implicit_rating": pa.array(
                contracts.implicit_rating(dwell.astype(np.float32), num_likes, num_saves, num_shares, attended)
            ),
            "timestamp": pa.array(micros, contracts.TIMESTAMP),
            "time_of_day_bucket": pa.array(time_of_day, pa.int32()),
            "day_of_week_bucket": pa.array(weekend, pa.int32()),
            "count": pa.array(np.ones(n, np.int32)),  # one row per event
        }
    )


def _slot_hours(rng: np.random.Generator, slot: np.ndarray) -> np.ndarray:
    hours = np.zeros(len(slot), dtype=np.int64)
    for s, name in enumerate(TIME_SLOTS):
        chosen = slot == s
        options = np.array(_SLOT_HOURS[name])
        hours[chosen] = options[rng.integers(0, len(options), size=chosen.sum())]
    return hours
