"""Whole-world generation: the same per-city steps the Dagster assets run, in one call."""

from __future__ import annotations

import logging
import time

import pyarrow as pa

from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.interactions import generate_interactions
from recsys_core.synthetic.places import generate_places
from recsys_core.synthetic.social_graph import generate_friend_labels, generate_user_user_edges
from recsys_core.synthetic.users import generate_users

logger = logging.getLogger(__name__)

TABLES = ("users", "places", "interactions", "user_user_edges", "friend_labels")


def generate_world(config: WorldConfig) -> dict[str, pa.Table]:
    """All five tables for every city, concatenated (ids are global across cities)."""
    config.validate()
    places = pa.concat_tables([generate_places(config, c) for c in range(config.n_cities)])
    parts: dict[str, list[pa.Table]] = {name: [] for name in TABLES if name != "places"}
    started = time.perf_counter()
    for city in range(config.n_cities):
        users = generate_users(config, city)
        interactions = generate_interactions(config, city, users, places)
        edges = generate_user_user_edges(config, users, interactions)
        labels = generate_friend_labels(config, city, users, interactions, edges)
        for name, table in zip(parts, (users, interactions, edges, labels), strict=True):
            parts[name].append(table)
        elapsed = time.perf_counter() - started
        logger.info(
            "city %d/%d: %d users, %d events (%.1fs elapsed, ETA %.1fs)",
            city + 1,
            config.n_cities,
            users.num_rows,
            interactions.num_rows,
            elapsed,
            elapsed / (city + 1) * (config.n_cities - city - 1),
        )
    world = {name: pa.concat_tables(tables) for name, tables in parts.items()}
    world["places"] = places
    return {name: world[name] for name in TABLES}
