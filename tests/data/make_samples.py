"""Writes the two sample worlds of the README's "Bring your own data" (and of the end-to-end tests):
`outings.csv`, an events file with cities and categories of its own, and `partial_world/`, a Parquet
world with only some of the contract's columns and a vocabulary of its own.

    .venv/bin/python tests/data/make_samples.py
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys_core import contracts
from recsys_core.vocabulary import Vocabulary

HERE = Path(__file__).parent
VOCABULARY = Vocabulary.from_dict(
    {
        "cities": ["Atlantis", "El Dorado", "Shangri-La"],
        "neighborhoods": {"Atlantis": ["Coral Reef", "Old Harbour"], "El Dorado": ["Gold Quarter"]},
        "categories": ["surf", "ruins", "tea"],
        "tags": [
            {"name": "big_waves", "category": "surf"},
            {"name": "longboard", "category": "surf"},
            {"name": "temples", "category": "ruins"},
            {"name": "oolong", "category": "tea"},
            {"name": "matcha", "category": "tea"},
        ],
        "time_slots": ["dawn", "dusk"],
        "slot_of_bucket": [[0, 0], [0, 1], [1, 1], [1, 1]],
        "price_bands": ["cheap", "dear"],
    }
)


def partial_world(seed: int = 7) -> dict[str, pa.Table]:
    """Users know their city (and, in Atlantis, their neighbourhood); places their city, neighbourhood,
    category, tags and (mostly) price band; interactions who went where and when. No popularity
    figures, tastes or social tables: completion and the graph make the rest."""
    rng = np.random.default_rng(seed)
    n_users, n_places = 240, 120
    user_city = rng.integers(0, 3, n_users).astype(np.int32)
    place_city = (np.arange(n_places) % 3).astype(np.int32)
    place_tag = rng.integers(0, 5, n_places)
    tags = np.zeros((n_places, 5), np.float32)
    tags[np.arange(n_places), place_tag] = 1.0
    neighborhood = np.where(place_city == 0, rng.integers(0, 2, n_places), np.where(place_city == 1, 0, -1))
    taste = rng.integers(0, 5, n_users)
    users, places, when = [], [], []
    start = int(np.datetime64("2026-06-01T00:00:00", "s").astype(np.int64))
    for u in range(n_users):
        local = np.flatnonzero(place_city == user_city[u])
        liked = local[place_tag[local] == taste[u]]
        for p in rng.choice(np.concatenate([liked.repeat(4), local]), size=12):
            users.append(u)
            places.append(int(p))
            when.append(start + int(rng.integers(0, 90 * 86_400)))
    tag_category = np.array(VOCABULARY.tag_category)
    return {
        "users": pa.table(
            {
                "user_id": pa.array(np.arange(n_users) + 1000, pa.int64()),
                "home_city_id": pa.array(user_city),
                "home_neighborhood_id": pa.array(np.where(user_city == 0, rng.integers(0, 2, n_users), -1), pa.int32()),
            }
        ),
        "places": pa.table(
            {
                "place_id": pa.array(np.arange(n_places) + 50, pa.int64()),
                "city_id": pa.array(place_city),
                "neighborhood_id": pa.array(neighborhood, pa.int32()),
                "category_ids": pa.array([[int(tag_category[t])] for t in place_tag], pa.list_(pa.int32())),
                "fine_tag_vector": contracts.matrix_to_list_array(tags),
                "price_band": pa.array(rng.integers(-1, 2, n_places), pa.int32()),
            }
        ),
        "interactions": pa.table(
            {
                "user_id": pa.array(np.array(users) + 1000, pa.int64()),
                "place_id": pa.array(np.array(places) + 50, pa.int64()),
                "timestamp": pa.array(np.array(when) * 1_000_000, pa.int64()).cast(contracts.TIMESTAMP),
            }
        ),
    }


def outings(seed: int = 3) -> pa.Table:
    """Events of 150 people at 90 places in two cities, with ISO timestamps, counts and categories."""
    rng = np.random.default_rng(seed)
    cities, categories = ["Gotham", "Metropolis"], ["diner", "gallery", "arcade"]
    n_items = 90
    item_city = np.arange(n_items) % 2
    item_category = rng.integers(0, 3, n_items)
    rows = []
    for user in range(150):
        local = np.flatnonzero(item_city == user % 2)
        favourite = local[item_category[local] == user % 3]
        for item in rng.choice(np.concatenate([favourite.repeat(3), local]), size=10):
            stamp = dt.datetime(2026, 5, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
            rows.append((user + 1, int(item) + 1, stamp.isoformat(), int(rng.integers(1, 5)), int(item)))
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": [r[2] for r in rows],
            "count": [r[3] for r in rows],
            "city": [cities[item_city[r[4]]] for r in rows],
            "category": [categories[item_category[r[4]]] for r in rows],
        }
    )


def main() -> None:
    pcsv.write_csv(outings(), HERE / "outings.csv")
    world = HERE / "partial_world"
    world.mkdir(exist_ok=True)
    for name, table in partial_world().items():
        pq.write_table(table, world / f"{name}.parquet")
    VOCABULARY.save(world)
    print(f"wrote {HERE / 'outings.csv'} and {world}/")


if __name__ == "__main__":
    main()
