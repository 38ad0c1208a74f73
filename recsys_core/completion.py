"""Partial worlds made whole: what a source did not give, filled in and recorded as such.

A source need only give `contracts.REQUIRED_COLUMNS`: user and place ids with a city, and who
interacted with what. Every optional column it leaves out is filled with a neutral default (zero
tastes, an empty area map, `UNKNOWN` neighbourhood, price band and time slot, one event per row,
an undated timestamp) and listed in the table's schema metadata (`contracts.filled_columns`), so
- the checks hold only the given columns to the contract's rules;
- the graph derives what history can tell (a user's tastes from the places they went to, a
  place's popularity from its visitors: `features.derive_from_history`), from the training
  edges only when a model is measured;
- explanations cite only what was given or derived, falling back to history ("Because you went
  to X") where there are no place features.

Friend labels a source does not give are derived from its declared friendships when it has any
(each friendship a compatible pair, as many same-city strangers as incompatible ones) and listed
as derived (`contracts.derived_columns`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np
import pyarrow as pa

from recsys_core import contracts
from recsys_core.vocabulary import BUILTIN, Vocabulary

# Events without a time: one fixed instant, so time decay treats them alike and buckets agree.
UNDATED = np.datetime64("2024-01-01T12:00:00", "us")
INT32_MAX = np.iinfo(np.int32).max


class IncompleteWorldError(ValueError):
    """A source's tables lack required columns or tables; the message names each."""


def missing_required(tables: Mapping[str, pa.Table]) -> list[str]:
    """Every required table and column that is not there, as readable lines."""
    problems = []
    for name, columns in contracts.REQUIRED_COLUMNS.items():
        if name not in tables:
            if name not in contracts.OPTIONAL_TABLES:
                problems.append(f"no {name} table")
            continue
        absent = [c for c in columns if c not in tables[name].column_names]
        if absent:
            problems.append(f"{name}: missing required column(s) {', '.join(absent)}")
    return problems


def _column(table: pa.Table, name: str, values: pa.Array[Any]) -> pa.Table:
    return table.append_column(name, values) if name not in table.column_names else table


def _fill(table: pa.Table, defaults: Mapping[str, Callable[[], Any]], filled: list[str]) -> pa.Table:
    """Add each absent column with its default (an Arrow array of the table's length)."""
    for name, make in defaults.items():
        if name not in table.column_names:
            table = table.append_column(name, make())
            filled.append(name)
    return table


def _zeros(n: int, width: int) -> pa.FixedSizeListArray[pa.DataType, int]:
    return contracts.matrix_to_list_array(np.zeros((n, width), np.float32))


def _constant(n: int, value: object, type_: pa.DataType) -> pa.Array[Any]:
    return pa.array(np.full(n, value), type_)


# ------------------------------------------------------------------ interactions


def _timestamps(column: pa.ChunkedArray[Any]) -> pa.Array[Any]:
    """A given timestamp column as UTC microseconds: timestamps (naive ones taken as UTC), ISO 8601
    text (with a zone, or without one: UTC), or epoch seconds."""
    values: Any = column.combine_chunks()
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        micros = np.round(values.to_numpy(zero_copy_only=False).astype(np.float64) * 1e6)
        return pa.array(micros.astype(np.int64), pa.int64()).cast(contracts.TIMESTAMP)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        try:
            return cast("pa.Array[Any]", values.cast(contracts.TIMESTAMP))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = values.cast(pa.timestamp("us"))  # no zone in the text: UTC
    if pa.types.is_timestamp(values.type):
        if values.type.tz is not None:
            return cast("pa.Array[Any]", values.cast(contracts.TIMESTAMP))
        return cast("pa.Array[Any]", values.cast(pa.timestamp("us")).cast(pa.int64()).cast(contracts.TIMESTAMP))
    raise ValueError(f"interactions: timestamp is {values.type}; give timestamps, ISO 8601 text or epoch seconds")


def complete_interactions(interactions: pa.Table) -> pa.Table:
    """The interactions contract from user_id, place_id and whatever else is given.

    Absent engagement is none (no dwell, likes, saves, shares, attendance), so the rating is the
    formula's 1; an absent count is one event per row; an absent timestamp is `UNDATED`."""
    n, filled = interactions.num_rows, list[str]()
    table = interactions
    if "timestamp" in table.column_names:
        stamps = _timestamps(table.column("timestamp"))
        table = table.set_column(table.column_names.index("timestamp"), "timestamp", stamps)
    if "count" in table.column_names:
        counts = table.column("count").combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64)
        whole = np.clip(np.round(np.nan_to_num(counts, nan=0.0)), 0, INT32_MAX).astype(np.int32)
        table = table.set_column(table.column_names.index("count"), "count", pa.array(whole))
    table = _fill(
        table,
        {
            "dwell_time": lambda: _constant(n, 0.0, contracts.F32),
            "num_likes": lambda: _constant(n, 0, contracts.I32),
            "num_saves": lambda: _constant(n, 0, contracts.I32),
            "num_shares": lambda: _constant(n, 0, contracts.I32),
            "attended": lambda: _constant(n, False, pa.bool_()),
            "timestamp": lambda: pa.array(np.full(n, UNDATED), pa.timestamp("us")).cast(contracts.TIMESTAMP),
            "count": lambda: _constant(n, 1, contracts.I32),
        },
        filled,
    )
    if "implicit_rating" not in table.column_names:

        def number(name: str) -> np.ndarray:
            return np.nan_to_num(table.column(name).to_numpy().astype(np.float64))  # nulls: the checks name them

        rating = contracts.implicit_rating(
            number("dwell_time").astype(np.float32),
            number("num_likes"),
            number("num_saves"),
            number("num_shares"),
            table.column("attended").fill_null(pa.scalar(False)).to_numpy(zero_copy_only=False),
        )
        table = table.append_column("implicit_rating", pa.array(rating))
        filled.append("implicit_rating")
    micros = table.column("timestamp").cast(pa.int64()).fill_null(pa.scalar(0)).to_numpy()
    tod, weekend = contracts.time_buckets(micros)
    buckets = [b for b in ("time_of_day_bucket", "day_of_week_bucket") if b not in table.column_names]
    table = _column(table, "time_of_day_bucket", pa.array(tod))
    table = _column(table, "day_of_week_bucket", pa.array(weekend))
    if "timestamp" in filled:  # buckets of a default time are defaults too
        filled += buckets
        buckets = []
    return contracts.with_provenance(_conformed(table, "interactions", filled), derived=buckets)


# ------------------------------------------------------------------ users and places


def complete_users(users: pa.Table, vocabulary: Vocabulary) -> pa.Table:
    """The users contract from user_id, home_city_id and whatever else is given (tastes zero until
    the graph derives them from history, neighbourhood unknown, no activity figures)."""
    n, filled = users.num_rows, list[str]()
    widths = {
        "cat_pref": len(vocabulary.categories),
        "fine_pref": len(vocabulary.tags),
        "vibe_pref": len(vocabulary.vibes),
    }
    defaults: dict[str, Any] = {
        "home_neighborhood_id": lambda: _constant(n, contracts.UNKNOWN, contracts.I32),
        **{name: (lambda w=width: _zeros(n, w)) for name, width in widths.items() if width},
        "area_freqs": lambda: pa.array([[] for _ in range(n)], pa.map_(contracts.I32, contracts.F32)),
    }
    for name in (
        "avg_sessions_per_week",
        "avg_views_per_session",
        "avg_likes_per_session",
        "avg_saves_per_session",
        "avg_attends_per_month",
    ):
        defaults[name] = lambda: _constant(n, 0.0, contracts.F32)
    return _conformed(_fill(users, defaults, filled), "users", filled, vocabulary)


def _category_lists(one_hot: np.ndarray) -> pa.Array[Any]:
    return pa.array([np.flatnonzero(row > 0).astype(np.int32) for row in one_hot], pa.list_(contracts.I32))


def _one_hot(category_ids: pa.ChunkedArray[Any], width: int) -> np.ndarray:
    lists: Any = category_ids.combine_chunks()  # a ListArray (the stubs type combine_chunks as Array)
    lengths = np.diff(lists.offsets.to_numpy())
    rows = np.repeat(np.arange(len(lists)), lengths)
    cats = lists.values.to_numpy(zero_copy_only=False).astype(np.int64)
    keep = (cats >= 0) & (cats < width)  # out-of-range ids are the places check's to report
    matrix = np.zeros((len(lists), width), np.float32)
    matrix[rows[keep], cats[keep]] = 1.0
    return matrix


def complete_places(places: pa.Table, vocabulary: Vocabulary) -> pa.Table:
    """The places contract from place_id, city_id and whatever else is given. Categories come as
    either `category_ids` or `category_one_hot` (each is made from the other); popularity figures
    are left to the graph, which derives them from the visits."""
    n, filled = places.num_rows, list[str]()
    n_categories = len(vocabulary.categories)
    table = places
    if "category_ids" in table.column_names and "category_one_hot" not in table.column_names and n_categories:
        table = table.append_column(
            "category_one_hot", contracts.matrix_to_list_array(_one_hot(table.column("category_ids"), n_categories))
        )
    elif "category_one_hot" in table.column_names and "category_ids" not in table.column_names:
        table = table.append_column("category_ids", _category_lists(contracts.list_matrix(table, "category_one_hot")))
    defaults: dict[str, Any] = {
        "neighborhood_id": lambda: _constant(n, contracts.UNKNOWN, contracts.I32),
        "category_ids": lambda: pa.array([[] for _ in range(n)], pa.list_(contracts.I32)),
        **({"category_one_hot": lambda: _zeros(n, n_categories)} if n_categories else {}),
        **({"fine_tag_vector": lambda: _zeros(n, len(vocabulary.tags))} if vocabulary.tags else {}),
        "price_band": lambda: _constant(n, contracts.UNKNOWN, contracts.I32),
        "typical_time_slot": lambda: _constant(n, contracts.UNKNOWN, contracts.I32),
    }
    for name in ("base_popularity", "avg_daily_visits", "conversion_rate", "novelty_score"):
        defaults[name] = lambda: _constant(n, 0.0, contracts.F32)
    return _conformed(_fill(table, defaults, filled), "places", filled, vocabulary)


# ------------------------------------------------------------------ social tables


def complete_user_user_edges(edges: pa.Table | None) -> pa.Table:
    """Social edges. Bare (user_u, user_v) pairs, such as a friendship list, are an undirected list:
    ordered u < v with self pairs and repeats dropped, the edge features zero. Edges that come with
    their features are left as they are, for the checks to hold them to the contract."""
    if edges is None:
        return contracts.USER_USER_EDGES.empty_table()
    features = ("interest_overlap_score", "co_attendance_count", "same_neighborhood_freq")
    if any(name in edges.column_names for name in features):
        return _conformed(edges, "user_user_edges", [])
    u = edges.column("user_u").to_numpy(zero_copy_only=False).astype(np.int64)
    v = edges.column("user_v").to_numpy(zero_copy_only=False).astype(np.int64)
    keep = np.flatnonzero(u != v)
    pairs = np.stack([np.minimum(u, v)[keep], np.maximum(u, v)[keep]], axis=1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)
    n = len(pairs)
    table = pa.table({"user_u": pa.array(pairs[:, 0]), "user_v": pa.array(pairs[:, 1])})
    return _conformed(
        table.append_column("interest_overlap_score", _constant(n, 0.0, contracts.F32))
        .append_column("co_attendance_count", _constant(n, 0, contracts.I32))
        .append_column("same_neighborhood_freq", _constant(n, 0.0, contracts.F32)),
        "user_user_edges",
        list(features),
    )


def labels_from_friendships(edges: pa.Table, users: pa.Table, interactions: pa.Table, seed: int = 0) -> pa.Table:
    """Friend labels where a source declares friendships but gives no labels: each friendship is
    a compatible pair (attending together when they share a place), and as many random same-city
    pairs that are not friends are incompatible ones. Listed as derived."""
    if edges.num_rows == 0:
        return contracts.FRIEND_LABELS.empty_table()
    rng = np.random.default_rng(seed)
    u = edges.column("user_u").to_numpy()
    v = edges.column("user_v").to_numpy()
    ids = users.column("user_id").to_numpy()
    cities = users.column("home_city_id").to_numpy()
    friends = set(zip(u.tolist(), v.tolist(), strict=True))
    neg_u, neg_v = [], []
    for city in np.unique(cities):
        members = ids[cities == city]
        wanted = int(np.isin(u, members).sum())
        if len(members) < 2 or wanted == 0:
            continue
        for _ in range(4):  # a few rounds of rejection sampling fill it for any but tiny dense cities
            a, b = rng.choice(members, size=(2, 2 * wanted))
            for x, y in zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist(), strict=True):
                if x != y and (x, y) not in friends:
                    friends.add((x, y))
                    neg_u.append(x)
                    neg_v.append(y)
                    wanted -= 1
                    if wanted == 0:
                        break
            if wanted == 0:
                break
    shared = _share_a_place(interactions, u, v)
    table = pa.table(
        {
            "user_u": pa.array(np.concatenate([u, neg_u]).astype(np.int64)),
            "user_v": pa.array(np.concatenate([v, neg_v]).astype(np.int64)),
            "label_compat": pa.array(np.r_[np.ones(len(u)), np.zeros(len(neg_u))].astype(np.int32)),
            "label_attend": pa.array(np.r_[shared, np.zeros(len(neg_u))].astype(np.int32)),
        }
    ).sort_by([("user_u", "ascending"), ("user_v", "ascending")])
    return contracts.with_provenance(table, derived=("label_compat", "label_attend"))


def _share_a_place(interactions: pa.Table, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For each pair, whether both users interacted with at least one same place."""
    import scipy.sparse as sp

    users = interactions.column("user_id").to_numpy()
    places = interactions.column("place_id").to_numpy()
    user_ids, user_row = np.unique(np.concatenate([users, u, v]), return_inverse=True)
    _, place_col = np.unique(places, return_inverse=True)
    rows = user_row[: len(users)]
    m = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, place_col)),
        shape=(len(user_ids), place_col.max() + 1 if len(places) else 1),
    )
    m.data[:] = 1.0
    a, b = user_row[len(users) : len(users) + len(u)], user_row[len(users) + len(u) :]
    return (np.asarray(m[a].multiply(m[b]).sum(axis=1)).ravel() > 0).astype(np.int32)


# ------------------------------------------------------------------ the whole world


def _conformed(table: pa.Table, name: str, filled: list[str], vocabulary: Vocabulary = BUILTIN) -> pa.Table:
    """Provenance recorded, then the contract's columns in order (a given column of a wrong type is
    left as it is, so the schema check names it)."""
    table = contracts.with_provenance(table, filled=filled)
    try:
        return contracts.conform(table, name, vocabulary)
    except ValueError:
        return table


def complete_world(tables: Mapping[str, pa.Table], vocabulary: Vocabulary, seed: int = 0) -> dict[str, pa.Table]:
    """All five world tables in the contract from a source's (possibly partial) tables."""
    problems = missing_required(tables)
    if problems:
        raise IncompleteWorldError("the world source is incomplete: " + "; ".join(problems))
    users = complete_users(tables["users"], vocabulary)
    interactions = complete_interactions(tables["interactions"])
    edges = complete_user_user_edges(tables.get("user_user_edges"))
    labels = tables.get("friend_labels")
    if labels is None:
        labels = labels_from_friendships(edges, users, interactions, seed)
    return {
        "users": users,
        "places": complete_places(tables["places"], vocabulary),
        "interactions": interactions,
        "user_user_edges": edges,
        "friend_labels": _conformed(labels, "friend_labels", []),
    }
