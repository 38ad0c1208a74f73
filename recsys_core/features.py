"""Feature matrices: world tables -> dense float32 node and edge features.

The widths follow the world's vocabulary (`FeatureLayouts.for_vocabulary`): one slot per
category, tag and vibe, and one area slot per neighbourhood of the city with the most. The layout
is the specification's, with one deliberate change: a user's area frequencies take one slot per
neighbourhood instead of the top-5 weights sorted by size, so the model knows *which*
neighbourhoods a user goes out in (158 user columns for the built-in vocabulary, not 148).
`USER_LAYOUT` / `PLACE_LAYOUT` are the built-in vocabulary's layouts, for the synthetic world and
tests; `INTERACTION_EDGE_LAYOUT` / `SOCIAL_EDGE_LAYOUT` are fixed by the contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import cast

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from recsys_core import contracts
from recsys_core.vocabulary import BUILTIN, N_DAY_OF_WEEK_BUCKETS, N_TIME_OF_DAY_BUCKETS, Vocabulary


@dataclass(frozen=True)
class Layout:
    """Named, contiguous column blocks of a feature matrix."""

    blocks: tuple[tuple[str, int], ...]

    @property
    def width(self) -> int:
        return sum(size for _, size in self.blocks)

    @cached_property
    def _slices(self) -> dict[str, slice]:
        slices, start = {}, 0
        for block, size in self.blocks:
            slices[block] = slice(start, start + size)
            start += size
        return slices

    def __getitem__(self, name: str) -> slice:
        return self._slices[name]  # looked up per request in serving: a dict, not a scan

    def size(self, name: str) -> int:
        block = self._slices[name]
        return int(block.stop - block.start)

    def as_table(self) -> list[dict[str, object]]:
        return [{"block": b, "start": self[b].start, "stop": self[b].stop, "width": s} for b, s in self.blocks]


_BEHAVIOUR_SCALE = {
    "avg_sessions_per_week": 10.0,
    "avg_views_per_session": 100.0,
    "avg_likes_per_session": 10.0,
    "avg_saves_per_session": 10.0,
    "avg_attends_per_month": 20.0,
}

INTERACTION_EDGE_LAYOUT = Layout(
    (
        ("rating", 1),
        ("dwell", 1),
        ("likes", 1),
        ("saves", 1),
        ("shares", 1),
        ("attended", 1),
        ("time_of_day", N_TIME_OF_DAY_BUCKETS),
        ("day_of_week", N_DAY_OF_WEEK_BUCKETS),
    )
)
SOCIAL_EDGE_LAYOUT = Layout((("interest_overlap", 1), ("co_attendance", 1), ("same_neighborhood", 1)))


@dataclass(frozen=True)
class FeatureLayouts:
    """The node layouts of one vocabulary's feature matrices (edge layouts are the contract's).

    Widths follow the vocabulary: categories, tags and vibes one slot each, and one area slot per
    neighbourhood of the city with the most. Everything that reads a feature matrix takes its
    layouts from the vocabulary (or model config) it was built with, never from a constant.
    """

    user: Layout
    place: Layout

    @classmethod
    def for_sizes(cls, n_categories: int, n_tags: int, n_vibes: int, n_neighborhoods: int) -> FeatureLayouts:
        user = Layout(
            (
                ("city_id", 1),
                ("home_neighborhood_id", 1),
                ("cat_pref", n_categories),
                ("fine_pref", n_tags),
                ("vibe_pref", n_vibes),
                ("area_freqs", n_neighborhoods),
                ("behaviour", len(_BEHAVIOUR_SCALE)),
            )
        )
        place = Layout(
            (
                ("city_id", 1),
                ("neighborhood_id", 1),
                ("category_one_hot", n_categories),
                ("fine_tag_vector", n_tags),
                ("price_band", 1),
                ("typical_time_slot", 1),
                ("popularity", 4),
            )
        )
        return cls(user=user, place=place)

    @classmethod
    def for_vocabulary(cls, vocabulary: Vocabulary) -> FeatureLayouts:
        return cls.for_sizes(
            len(vocabulary.categories), len(vocabulary.tags), len(vocabulary.vibes), vocabulary.n_neighborhoods
        )


# The built-in (synthetic) vocabulary's layouts: for the synthetic world, its generator and tests.
BUILTIN_LAYOUTS = FeatureLayouts.for_vocabulary(BUILTIN)
USER_LAYOUT = BUILTIN_LAYOUTS.user
PLACE_LAYOUT = BUILTIN_LAYOUTS.place


def user_features(users: pa.Table, vocabulary: Vocabulary = BUILTIN) -> np.ndarray:
    behaviour = np.stack([np.minimum(users.column(c).to_numpy() / s, 1.0) for c, s in _BEHAVIOUR_SCALE.items()], axis=1)
    x = np.concatenate(
        [
            users.column("home_city_id").to_numpy()[:, None],
            users.column("home_neighborhood_id").to_numpy()[:, None],
            contracts.list_matrix(users, "cat_pref"),
            contracts.list_matrix(users, "fine_pref"),
            contracts.list_matrix(users, "vibe_pref"),
            contracts.map_matrix(users, "area_freqs", vocabulary.n_neighborhoods),
            behaviour,
        ],
        axis=1,
    ).astype(np.float32)
    return x


def place_features(places: pa.Table) -> np.ndarray:
    def col(name: str) -> NDArray[np.float32]:
        return places.column(name).to_numpy().astype(np.float32)[:, None]

    popularity = np.concatenate(
        [
            np.log1p(col("base_popularity")) / 5.0,
            np.log1p(col("avg_daily_visits")) / 5.0,
            col("conversion_rate"),
            col("novelty_score"),
        ],
        axis=1,
    )
    x = np.concatenate(
        [
            col("city_id"),
            col("neighborhood_id"),
            contracts.list_matrix(places, "category_one_hot"),
            contracts.list_matrix(places, "fine_tag_vector"),
            col("price_band"),
            col("typical_time_slot"),
            np.minimum(popularity, 1.0),
        ],
        axis=1,
    ).astype(np.float32)
    return x


@dataclass(frozen=True)
class InteractionEdges:
    """One edge per (user, place) pair, aggregating that pair's repeated events."""

    user_index: np.ndarray
    place_index: np.ndarray
    attr: np.ndarray  # (E, 12), INTERACTION_EDGE_LAYOUT
    count: np.ndarray  # events per pair (the sum of the rows' counts)
    last_time: np.ndarray  # latest event, microseconds since the epoch (for time decay)
    first_time: np.ndarray  # earliest event (a time split holds out the pairs first seen late)


def aggregate_interactions(interactions: pa.Table, user_index: np.ndarray, place_index: np.ndarray) -> InteractionEdges:
    """Aggregate events to pair edges (indices already mapped from ids).

    Why aggregate: a pair seen 9 times is one relationship; 9 parallel edges would
    weight it 9x in mean aggregation and bloat the graph. Counts and sums survive as
    features, and `count` / `last_time` stay available for sample weights and time decay.
    """
    n_places = int(place_index.max()) + 1 if len(place_index) else 1
    key = user_index.astype(np.int64) * n_places + place_index
    pair_key, inverse = np.unique(key, return_inverse=True)
    n = len(pair_key)

    def total(values: NDArray[np.float64]) -> NDArray[np.float64]:
        # numpy's stub types bincount as intp even with weights, where it returns float64.
        return cast("NDArray[np.float64]", np.bincount(inverse, weights=values, minlength=n))

    rows = np.bincount(inverse, minlength=n).astype(np.float64)
    count = total(interactions.column("count").to_numpy(zero_copy_only=False).astype(np.float64))  # events, all rows

    def get(name: str) -> NDArray[np.float64]:
        return interactions.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    tod = interactions.column("time_of_day_bucket").to_numpy()
    dow = interactions.column("day_of_week_bucket").to_numpy()
    attended = np.zeros(n)
    np.maximum.at(attended, inverse, get("attended"))
    last_time = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    stamps = interactions.column("timestamp").cast(pa.int64()).to_numpy()
    np.maximum.at(last_time, inverse, stamps)
    first_time = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_time, inverse, stamps)
    attr = np.column_stack(
        [
            total(get("implicit_rating")) / rows / 5.0,
            np.minimum(np.log1p(total(get("dwell_time"))) / 8.0, 1.0),
            np.minimum(total(get("num_likes")) / 5.0, 1.0),
            np.minimum(total(get("num_saves")) / 3.0, 1.0),
            np.minimum(total(get("num_shares")) / 2.0, 1.0),
            attended,
            *(total((tod == b).astype(np.float64)) / rows for b in range(N_TIME_OF_DAY_BUCKETS)),
            *(total((dow == b).astype(np.float64)) / rows for b in range(N_DAY_OF_WEEK_BUCKETS)),
        ]
    ).astype(np.float32)
    return InteractionEdges(
        user_index=(pair_key // n_places).astype(np.int64),
        place_index=(pair_key % n_places).astype(np.int64),
        attr=attr,
        count=count.astype(np.int32),
        last_time=last_time,
        first_time=first_time,
    )


def social_edge_features(edges: pa.Table) -> np.ndarray:
    return np.column_stack(
        [
            edges.column("interest_overlap_score").to_numpy(),
            np.minimum(edges.column("co_attendance_count").to_numpy() / 10.0, 1.0),
            edges.column("same_neighborhood_freq").to_numpy(),
        ]
    ).astype(np.float32)


def feature_table(id_name: str, ids: np.ndarray, x: np.ndarray, derive: tuple[str, ...] = ()) -> pa.Table:
    """A feature matrix as a table (id column + fixed-size list), so it is stored like any table;
    `derive` names the blocks the graph is to derive from history (`derivable_blocks`)."""
    table = pa.table({id_name: pa.array(ids, pa.int64()), "x": contracts.matrix_to_list_array(x)})
    return table.replace_schema_metadata({DERIVE_KEY: ",".join(derive).encode()}) if derive else table


def user_feature_table(users: pa.Table, vocabulary: Vocabulary = BUILTIN, places: pa.Table | None = None) -> pa.Table:
    """`places` (of every city) say which tastes history can tell; without them none are derived.
    Users' display names, where the world has them, ride along (the graph keeps them for explanations)."""
    users = users.sort_by("user_id")
    derive = derivable_blocks(users, places)["user"] if places is not None else ()
    table = feature_table("user_id", users.column("user_id").to_numpy(), user_features(users, vocabulary), derive)
    if contracts.DISPLAY_NAME in users.column_names:
        table = table.append_column(contracts.DISPLAY_NAME, users.column(contracts.DISPLAY_NAME).cast(pa.string()))
    return table


def place_feature_table(places: pa.Table) -> pa.Table:
    places = places.sort_by("place_id")
    derive = derivable_blocks(None, places)["place"]
    return feature_table("place_id", places.column("place_id").to_numpy(), place_features(places), derive)


# ------------------------------------------------------------------ derived from history

DERIVE_KEY = b"recsys.derive_blocks"
# A user block the source did not give, and the place column history fills it from.
USER_HISTORY_SOURCES = {"cat_pref": "category_one_hot", "fine_pref": "fine_tag_vector", "area_freqs": "neighborhood_id"}
POPULARITY_COLUMNS = ("base_popularity", "avg_daily_visits", "conversion_rate", "novelty_score")


def derivable_blocks(users: pa.Table | None, places: pa.Table | None) -> dict[str, tuple[str, ...]]:
    """Blocks of the feature matrices the source did not give but history can tell: a user's
    tastes where the places carry what they measure, a place's popularity from its visits."""
    place_given = set(places.column_names) - contracts.filled_columns(places) if places is not None else set()
    user_filled = contracts.filled_columns(users) if users is not None else frozenset()
    user = tuple(b for b, source in USER_HISTORY_SOURCES.items() if b in user_filled and source in place_given)
    popularity_filled = places is not None and set(POPULARITY_COLUMNS) <= contracts.filled_columns(places)
    return {"user": user, "place": ("popularity",) if popularity_filled else ()}


def blocks_to_derive(table: pa.Table) -> tuple[str, ...]:
    raw = (table.schema.metadata or {}).get(DERIVE_KEY, b"")
    return tuple(b for b in raw.decode().split(",") if b)


def _row_normalized(m: np.ndarray) -> np.ndarray:
    total = m.sum(axis=1, keepdims=True)
    out: NDArray[np.float32] = np.where(total > 0, m / np.maximum(total, 1e-12), 0.0).astype(np.float32)
    return out


def derive_from_history(
    x_user: np.ndarray,
    x_place: np.ndarray,
    user_index: np.ndarray,
    place_index: np.ndarray,
    attended: np.ndarray,
    layouts: FeatureLayouts,
    derive: Mapping[str, Sequence[str]],
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the feature matrices with the `derive` blocks computed from these (user, place)
    pairs: tastes as the share of visited places carrying each category / tag, area frequencies
    as the share of home-city visits per neighbourhood, and place popularity from its visitors.

    Given the training edges only, nothing a model is measured on leaks into its features."""
    x_user, x_place = x_user.copy(), x_place.copy()
    user, place = layouts.user, layouts.place
    n_users, n_places = len(x_user), len(x_place)
    for block in derive.get("user", ()):
        if block == "area_freqs":
            width = user.size("area_freqs")
            nbhd = x_place[place_index, place["neighborhood_id"]][:, 0].astype(np.int64)
            home = (x_place[place_index, place["city_id"]][:, 0] == x_user[user_index, user["city_id"]][:, 0]) & (
                (nbhd >= 0) & (nbhd < width)
            )
            counts = np.zeros((n_users, width), np.float32)
            np.add.at(counts, (user_index[home], nbhd[home]), 1.0)
        else:
            source = place[USER_HISTORY_SOURCES[block]]
            counts = np.zeros((n_users, source.stop - source.start), np.float32)
            np.add.at(counts, user_index, (x_place[place_index, source] > 0).astype(np.float32))
        x_user[:, user[block]] = _row_normalized(counts)
    if "popularity" in derive.get("place", ()):
        visitors = np.bincount(place_index, minlength=n_places).astype(np.float64)
        went = np.bincount(place_index, weights=attended.astype(np.float64), minlength=n_places)
        share = np.where(visitors > 0, went / np.maximum(visitors, 1), 0.0)
        novelty = 1.0 - np.log1p(visitors) / max(np.log1p(visitors.max(initial=0.0)), 1e-12)
        # The popularity block's four columns as `place_features` scales them.
        x_place[:, place["popularity"]] = np.minimum(
            np.stack([np.log1p(visitors) / 5.0, np.log1p(visitors / 30.0) / 5.0, share, novelty], axis=1), 1.0
        ).astype(np.float32)
    return x_user, x_place
