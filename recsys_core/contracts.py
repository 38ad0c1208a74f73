"""Data contracts: the exact Arrow schemas of the five world tables, and which columns a source must give.

Every producer (synthetic generator, bring-your-own data, new-data drops) is held to these
schemas column by column, and every consumer may rely on them. A source need only give the
`REQUIRED_COLUMNS` (ids, a city, who interacted with what); `recsys_core.completion` fills the
optional ones and records which it filled in the table's schema metadata (`filled_columns`), so
the checks hold only what was supplied to the contract's rules and nothing downstream mistakes
a filled-in default for data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_core.vocabulary import BUILTIN, Vocabulary

# Typed as the base class: a schema's (name, type) list mixes several DataType subclasses.
F32: pa.DataType = pa.float32()
I32: pa.DataType = pa.int32()
I64: pa.DataType = pa.int64()
TIMESTAMP = pa.timestamp("us", tz="UTC")
UNKNOWN = -1  # a neighbourhood, price band or time slot the source does not know

# What every source must give; everything else is optional (`recsys_core.completion`).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id", "home_city_id"),
    "places": ("place_id", "city_id"),
    "interactions": ("user_id", "place_id"),
    "user_user_edges": ("user_u", "user_v"),
    "friend_labels": ("user_u", "user_v", "label_compat", "label_attend"),
}
OPTIONAL_TABLES = ("user_user_edges", "friend_labels")  # a world may have no social data at all

# Columns a table may carry or leave out altogether, of this type where they are there. Unlike the
# schema's other optional columns they are not filled in: a default name would be no name, so a
# world without them is simply one whose explanations say "a friend of yours" instead of a name.
DISPLAY_NAME = "display_name"
OPTIONAL_COLUMNS: dict[str, dict[str, pa.DataType]] = {"users": {DISPLAY_NAME: pa.string()}}
MAX_DISPLAY_NAME_CHARS = 64  # a name goes into a reason sentence; a paragraph is not a name

INTERACTIONS = pa.schema(
    [
        ("user_id", I64),
        ("place_id", I64),
        ("dwell_time", F32),
        ("num_likes", I32),
        ("num_saves", I32),
        ("num_shares", I32),
        ("attended", pa.bool_()),
        ("implicit_rating", F32),
        ("timestamp", TIMESTAMP),
        ("time_of_day_bucket", I32),
        ("day_of_week_bucket", I32),
        ("count", I32),  # how many times the event happened (listens, repeat visits); 1 for one event
    ]
)

USER_USER_EDGES = pa.schema(
    [
        ("user_u", I64),
        ("user_v", I64),
        ("interest_overlap_score", F32),
        ("co_attendance_count", I32),
        ("same_neighborhood_freq", F32),
    ]
)

FRIEND_LABELS = pa.schema(
    [
        ("user_u", I64),
        ("user_v", I64),
        ("label_compat", I32),
        ("label_attend", I32),
    ]
)


def _schema(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema([(name, t) for name, t in fields if not (pa.types.is_fixed_size_list(t) and t.list_size == 0)])


def world_schemas(vocabulary: Vocabulary) -> dict[str, pa.Schema]:
    """The five tables' schemas for a vocabulary: taste and tag lists have one slot per name, and a
    list of no slots (a vocabulary without vibes, say) is no column at all: Parquet cannot store one."""
    n_categories, n_tags, n_vibes = len(vocabulary.categories), len(vocabulary.tags), len(vocabulary.vibes)
    users = _schema(
        [
            ("user_id", I64),
            ("home_city_id", I32),
            ("home_neighborhood_id", I32),
            ("cat_pref", pa.list_(F32, n_categories)),
            ("fine_pref", pa.list_(F32, n_tags)),
            ("vibe_pref", pa.list_(F32, n_vibes)),
            ("area_freqs", pa.map_(I32, F32)),
            ("avg_sessions_per_week", F32),
            ("avg_views_per_session", F32),
            ("avg_likes_per_session", F32),
            ("avg_saves_per_session", F32),
            ("avg_attends_per_month", F32),
        ]
    )
    places = _schema(
        [
            ("place_id", I64),
            ("city_id", I32),
            ("neighborhood_id", I32),
            ("category_ids", pa.list_(I32)),
            ("category_one_hot", pa.list_(F32, n_categories)),
            ("fine_tag_vector", pa.list_(F32, n_tags)),
            ("price_band", I32),
            ("typical_time_slot", I32),
            ("base_popularity", F32),
            ("avg_daily_visits", F32),
            ("conversion_rate", F32),
            ("novelty_score", F32),
        ]
    )
    return {
        "users": users,
        "places": places,
        "interactions": INTERACTIONS,
        "user_user_edges": USER_USER_EDGES,
        "friend_labels": FRIEND_LABELS,
    }


# The built-in (synthetic) vocabulary's schemas.
SCHEMAS: dict[str, pa.Schema] = world_schemas(BUILTIN)
USERS = SCHEMAS["users"]
PLACES = SCHEMAS["places"]


# Friend-label thresholds (the issues settle the two documents' disagreement on 0.6).
POSITIVE_OVERLAP = 0.6
POSITIVE_CO_ATTENDANCE = 2
NEGATIVE_OVERLAP = 0.3


def implicit_rating(
    dwell_time: np.ndarray,
    num_likes: np.ndarray,
    num_saves: np.ndarray,
    num_shares: np.ndarray,
    attended: np.ndarray,
) -> np.ndarray:
    """The contract's 1-5 engagement rating, vectorized."""
    score = (
        1.0
        + np.minimum(dwell_time / 150.0, 2.0)
        + np.minimum(0.5 * num_likes, 1.5)
        + np.minimum(1.0 * num_saves, 2.0)
        + np.minimum(0.5 * num_shares, 1.0)
        + 2.0 * attended.astype(np.float64)
    )
    return np.minimum(score, 5.0).astype(np.float32)


def list_matrix(table: pa.Table, column: str) -> np.ndarray:
    """A fixed-size list column as a dense (rows, width) float32 matrix (nulls become NaN); a column
    the schema leaves out because its vocabulary list is empty is (rows, 0)."""
    if column not in table.column_names:
        return np.zeros((table.num_rows, 0), np.float32)
    col = table.column(column).combine_chunks()
    width = col.type.list_size
    if col.null_count:
        col = col.fill_null(pa.scalar([np.nan] * width, col.type))
    return np.array(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(col), width)


def matrix_to_list_array(matrix: np.ndarray, value_type: pa.DataType = F32) -> pa.FixedSizeListArray[pa.DataType, int]:
    """Inverse of `list_matrix`: a (rows, width) matrix as a fixed-size list column."""
    matrix = np.ascontiguousarray(matrix)
    if matrix.shape[1] == 0:  # a vocabulary without names of a kind (from_arrays refuses width 0)
        empty: Any = pa.array([[]] * len(matrix), pa.list_(value_type, 0))  # a FixedSizeListArray; stubs: Array
        return cast("pa.FixedSizeListArray[pa.DataType, int]", empty)
    flat = pa.array(matrix.reshape(-1), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


# Schema metadata: the columns `completion` filled in because the source did not give them
# ("filled"), and those it derived from other data, such as labels from friendships ("derived").
FILLED_KEY = b"recsys.filled_columns"
DERIVED_KEY = b"recsys.derived_columns"


def _listed(table: pa.Table, key: bytes) -> frozenset[str]:
    raw = (table.schema.metadata or {}).get(key, b"")
    return frozenset(name for name in raw.decode().split(",") if name)


def filled_columns(table: pa.Table) -> frozenset[str]:
    """Columns holding defaults, not data: the source did not give them."""
    return _listed(table, FILLED_KEY)


def derived_columns(table: pa.Table) -> frozenset[str]:
    """Columns computed from other data (e.g. labels from friendships), not given as such."""
    return _listed(table, DERIVED_KEY)


def with_provenance(table: pa.Table, filled: Iterable[str] = (), derived: Iterable[str] = ()) -> pa.Table:
    """`table` with its filled and derived columns recorded (added to any already recorded)."""
    metadata = dict(table.schema.metadata or {})
    for key, names in ((FILLED_KEY, filled), (DERIVED_KEY, derived)):
        listed = sorted(_listed(table, key) | set(names))
        if listed:
            metadata[key] = ",".join(listed).encode()
    return table.replace_schema_metadata(metadata)


def time_buckets(micros: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The contract's (time_of_day_bucket, day_of_week_bucket) of UTC timestamps in microseconds:
    morning 6-12, afternoon 12-18, evening 18-24, night 0-6; weekday 0, weekend 1."""
    hour = (micros // 3_600_000_000) % 24
    weekday = (micros // 86_400_000_000 + 3) % 7  # 1970-01-01 was a Thursday
    tod = np.select([hour < 6, hour < 12, hour < 18], [3, 0, 1], default=2).astype(np.int32)
    return tod, (weekday >= 5).astype(np.int32)


def optional_fields(table: pa.Table, name: str) -> list[pa.Field[Any]]:
    """The contract's `OPTIONAL_COLUMNS` of table `name` that `table` has, as fields of their type."""
    return [pa.field(c, t) for c, t in OPTIONAL_COLUMNS.get(name, {}).items() if c in table.column_names]


def conform(table: pa.Table, name: str, vocabulary: Vocabulary = BUILTIN) -> pa.Table:
    """Select and order the contract's columns and cast to its types (keeping the provenance metadata);
    an `OPTIONAL_COLUMNS` column the table has comes last, cast to its type.

    Raises ValueError naming every missing column or uncastable type, so a file that
    does not fit the contract is refused with a reason instead of half-read.
    """
    schema = world_schemas(vocabulary)[name]
    for extra in optional_fields(table, name):
        schema = schema.append(extra)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    columns, problems = [], []
    for field in schema:
        col = table.column(field.name)
        try:
            columns.append(col if col.type == field.type else col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            problems.append(f"{field.name}: {col.type} is not {field.type} ({exc})")
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(table.schema.metadata or {}))


def map_matrix(table: pa.Table, column: str, width: int) -> np.ndarray:
    """A map<int32, float> column as a dense (rows, width) matrix; keys outside [0, width) are dropped."""
    col = table.column(column).combine_chunks()
    if not isinstance(col, pa.MapArray):
        raise TypeError(f"{column} must be a map column, got {col.type}")
    offsets = col.offsets.to_numpy()
    if col.null_count:
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        lengths = np.where(valid, np.diff(offsets), 0)
    else:
        lengths = np.diff(offsets)
    rows = np.repeat(np.arange(len(col)), np.diff(offsets))
    keys = col.keys.to_numpy(zero_copy_only=False)
    values = col.items.to_numpy(zero_copy_only=False).astype(np.float32)
    keep = np.repeat(lengths > 0, np.diff(offsets)) & (keys >= 0) & (keys < width)
    dense = np.zeros((len(col), width), dtype=np.float32)
    np.add.at(dense, (rows[keep], keys[keep].astype(np.int64)), values[keep])
    return dense
