"""Simulated users for the loop's benchmarks: how a user reacts to a list of places the service showed.

A user examines position r with probability 1 / (1 + r) ** 0.8 and, if examined, clicks with the
generator's own true preference, squashed per user: sigmoid(2 z - 3.5), z its z-score among the
city's places; a click leads to a visit (check-in) within a day with probability 0.5. The expected
CTR of a list under this model is what "truly better" means for a version, free of click noise.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.hidden import TruePreference

K = 10
EXAMINE_POWER = 0.8
CLICK_SLOPE, CLICK_OFFSET = 2.0, -3.5
VISIT_AFTER_CLICK = 0.5
DESCRIPTION = {
    "examine": f"1 / (1 + position) ** {EXAMINE_POWER}",
    "click_if_examined": f"sigmoid({CLICK_SLOPE} z {CLICK_OFFSET:+}), z: the true preference's z-score",
    "visit_after_click": VISIT_AFTER_CLICK,
}


def examine(positions: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + positions) ** EXAMINE_POWER


class Users:
    """The generator's truth, as click probabilities for what a user was shown."""

    def __init__(self, config: WorldConfig, world: dict[str, Any]):
        self.users = world["users"].sort_by("user_id")
        self.places = world["places"].sort_by("place_id")
        self.true = TruePreference(config, self.users, self.places)
        self.user_ids = self.users.column("user_id").to_numpy()
        self.place_ids = self.places.column("place_id").to_numpy()
        self.user_city = self.users.column("home_city_id").to_numpy()
        self.place_city = self.places.column("city_id").to_numpy()
        self.day = float(config.weeks * 7)
        self._z: dict[int, np.ndarray] = {}

    def attraction(self, user: int, places: np.ndarray) -> np.ndarray:
        """P(click | examined) of these place ids for the user (row index `user`)."""
        if user not in self._z:
            in_city = np.flatnonzero(self.place_city == self.user_city[user])
            scores = self.true.scores(np.array([user]), in_city, self.day)[0]
            z = np.full(len(self.place_ids), -10.0)
            z[in_city] = (scores - scores.mean()) / (scores.std() + 1e-9)
            self._z[user] = z
        rows = np.searchsorted(self.place_ids, places)
        return 1.0 / (1.0 + np.exp(-(CLICK_SLOPE * self._z[user][rows] + CLICK_OFFSET)))

    def react(
        self, user: int, body: dict[str, Any], stamp: dt.datetime, latest: dt.datetime, rng: np.random.Generator
    ) -> tuple[list[dict[str, Any]], float | None]:
        """The feedback events of user row `user` to a /recommend/places response shown at `stamp`
        (impressions, clicks, and visits no later than `latest`), and the list's expected CTR@K
        (None for an empty list)."""
        shown = np.array([r["place_id"] for r in body["recommendations"]], dtype=np.int64)
        if not len(shown):
            return [], None
        p_click = examine(np.arange(len(shown))) * self.attraction(user, shown)
        user_id = int(self.user_ids[user])
        common = {"user_id": user_id, "request_id": body["request_id"], "variant": body["variant"]}
        when = stamp.isoformat()
        events = [
            {"type": "impression", "place_id": int(p), "position": int(r), "timestamp": when, **common}
            for r, p in enumerate(shown)
        ]
        for place in shown[rng.random(len(shown)) < p_click]:
            events.append({"type": "click", "place_id": int(place), "timestamp": when, **common})
            if rng.random() < VISIT_AFTER_CLICK:
                visit_at = min(stamp + dt.timedelta(hours=float(rng.uniform(1, 24))), latest)
                events.append(
                    {"type": "visit", "user_id": user_id, "place_id": int(place), "timestamp": visit_at.isoformat()}
                )
        return events, float(p_click.sum() / K)
