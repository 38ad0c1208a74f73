"""Visits from the feedback events as new interactions, one inbox file per city and stored file.

This is how the loop closes: a check-in a user made after a recommendation becomes an interaction
through the same inbox and checks as any other new data (`recsys_core.inbox`), and so reaches the
next retrain. Only what the event says is taken (user, place, time, attended); the contract's other
columns are filled in as for a source that lacks them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_core import inbox
from recsys_core.files import write_atomically

FEEDBACK_PREFIX = "feedback-"


def visits_as_interactions(events: pa.Table) -> pa.Table:
    """The visit events as interactions of the contract, each (user, place, time) once."""
    visits = events.filter(pc.equal(events.column("type"), pa.scalar("visit")))
    table = pa.Table.from_arrays(
        [
            visits.column("user_id"),
            visits.column("place_id"),
            visits.column("timestamp"),
            pa.array(np.ones(visits.num_rows, dtype=bool)),
        ],
        names=["user_id", "place_id", "timestamp", "attended"],
    )
    table = table.group_by(["user_id", "place_id", "timestamp"]).aggregate([("attended", "max")])
    table = table.rename_columns(["user_id", "place_id", "timestamp", "attended"]).sort_by("timestamp")
    return inbox.conform(table, given=())


def split_by_city(interactions: pa.Table, place_ids: np.ndarray, place_cities: np.ndarray) -> dict[int, pa.Table]:
    """Interactions per city of their place (`place_ids` sorted, `place_cities` aligned); a place the
    world does not know is left for the inbox of no city (the endpoint refuses those already)."""
    ids = interactions.column("place_id").to_numpy()
    at = np.clip(np.searchsorted(place_ids, ids), 0, max(len(place_ids) - 1, 0))
    known = (place_ids[at] == ids) if len(place_ids) else np.zeros(len(ids), bool)
    cities = np.where(known, place_cities[at] if len(place_ids) else -1, -1)
    return {
        int(city): interactions.filter(pa.array(cities == city)) for city in np.unique(cities[cities >= 0]).tolist()
    }


def drop_in_inbox(table: pa.Table, inbox_dir: Path, city_slug: str, name: str) -> Path:
    """Write one city's file into the inbox under a hidden name, then rename it into view, so the
    inbox sensor never reads half a file."""
    import io

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return write_atomically(Path(inbox_dir) / city_slug / f"{FEEDBACK_PREFIX}{name}.parquet", buffer.getvalue())
