"""Validators for the world tables: every violation, with its row and reason, never an assert.

Each validator returns a DataFrame with one row per violation (`rule`, `row`, `key`,
`reason`); an empty frame means the table honours its contract. Asset checks turn these
into pass/fail with the offending rows as metadata; the new-data sensor uses them to refuse
a file with its reasons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from recsys_core import contracts, social
from recsys_core.vocabulary import BUILTIN, N_DAY_OF_WEEK_BUCKETS, N_TIME_OF_DAY_BUCKETS, Vocabulary

SUM_TOLERANCE = 1e-3  # float32 vectors of up to 100 entries
RATING_TOLERANCE = 1e-3
COLUMNS = ["rule", "row", "key", "reason"]


@dataclass
class Report:
    """Collects violations; `key` names the row in domain terms (an id or a pair)."""

    table: str
    keys: np.ndarray | None = None
    parts: list[pd.DataFrame] = field(default_factory=list)

    def add(self, rule: str, bad: ArrayLike, reason: str | np.ndarray) -> None:
        """Rows where `bad` is true; `reason` is one text, or one per row of the table."""
        rows = np.flatnonzero(bad)
        if len(rows):
            keys = self.keys[rows] if self.keys is not None else rows
            reasons = reason[rows] if isinstance(reason, np.ndarray) else reason
            self.parts.append(pd.DataFrame({"rule": rule, "row": rows, "key": keys.astype(str), "reason": reasons}))

    def add_table_level(self, rule: str, reason: str) -> None:
        self.parts.append(pd.DataFrame({"rule": [rule], "row": [-1], "key": [""], "reason": [reason]}))

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(
                {c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ("str", "int64", "str", "str"), strict=True)}
            )
        return pd.concat(self.parts, ignore_index=True)


def summarize(violations: pd.DataFrame, limit: int = 20) -> dict[str, object]:
    """Counts per rule and the first offending rows, for asset-check metadata and error messages."""
    return {
        "violations": int(len(violations)),
        "by_rule": violations["rule"].value_counts().to_dict(),
        "first_rows": violations.head(limit).to_dict(orient="records"),
    }


def describe(violations: pd.DataFrame, limit: int = 5) -> str:
    """One readable line per rule: `rule (n rows): reason; e.g. rows [..]`."""
    lines = []
    for rule, group in violations.groupby("rule", sort=False):
        lines.append(
            f"{rule} ({len(group)} rows): {group['reason'].iloc[0]}; e.g. keys {group['key'].head(limit).tolist()}"
        )
    return "\n".join(lines)


def check_schema(table: pa.Table, name: str, vocabulary: Vocabulary = BUILTIN) -> pd.DataFrame:
    """Column names and types against the contract, one violation per mismatch."""
    report = Report(name)
    expected = contracts.world_schemas(vocabulary)[name]
    for f in expected:
        if f.name not in table.column_names:
            report.add_table_level("schema", f"missing column {f.name} ({f.type})")
        elif table.schema.field(f.name).type != f.type:
            report.add_table_level("schema", f"column {f.name} is {table.schema.field(f.name).type}, expected {f.type}")
    for f in contracts.optional_fields(table, name):  # may be absent; where there, of its type
        if table.schema.field(f.name).type != f.type:
            report.add_table_level("schema", f"column {f.name} is {table.schema.field(f.name).type}, expected {f.type}")
    optional = contracts.OPTIONAL_COLUMNS.get(name, {})
    for extra in set(table.column_names) - set(expected.names) - set(optional):
        report.add_table_level("schema", f"unexpected column {extra}")
    return report.frame()


def _null_rows(table: pa.Table, report: Report, optional: Iterable[str] = ()) -> None:
    """Nulls in any column but the `optional` ones, where a null is "not known" (a user without a name)."""
    for name in sorted(set(table.column_names) - set(optional), key=table.column_names.index):
        col = table.column(name)
        if col.null_count:
            report.add("not_null", np.asarray(col.is_null().to_numpy(zero_copy_only=False)), f"{name} is null")


def _out_of_range(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """True where not lo <= value < hi (NaN counts as out of range)."""
    return ~((values >= lo) & (values < hi))


def _check_simplex(report: Report, matrix: np.ndarray, name: str) -> None:
    if matrix.shape[1] == 0:  # the vocabulary has no names of this kind: nothing to weigh
        return
    report.add("finite", ~np.isfinite(matrix).all(axis=1), f"{name} has NaN or infinite entries")
    report.add("non_negative", (matrix < 0).any(axis=1), f"{name} has negative entries")
    report.add("sums_to_one", np.abs(np.nansum(matrix, axis=1) - 1.0) > SUM_TOLERANCE, f"{name} does not sum to 1")


def _neighborhood_range(
    report: Report, rule: str, city: np.ndarray, neighborhood: np.ndarray, vocabulary: Vocabulary, column: str
) -> None:
    """Each neighbourhood id must be one of its city's (of any city's, where the city is unknown), or UNKNOWN."""
    counts = np.array([len(n) for n in vocabulary.neighborhoods])
    known_city = (city >= 0) & (city < vocabulary.n_cities)
    limit = np.where(known_city, counts[np.clip(city, 0, vocabulary.n_cities - 1)], vocabulary.n_neighborhoods)
    where = f"0..{counts[0] - 1}" if len(set(counts.tolist())) == 1 else "its city's neighbourhood ids"
    bad = ~((neighborhood >= 0) & (neighborhood < limit)) & (neighborhood != contracts.UNKNOWN)
    report.add(rule, bad, f"{column} outside {where} (or {contracts.UNKNOWN}: unknown)")


def _unique(report: Report, ids: np.ndarray, name: str) -> None:
    report.add("unique_id", pd.Series(ids).duplicated(keep=False).to_numpy(), f"{name} is duplicated")


def _ids_or_unknown(report: Report, rule: str, values: np.ndarray, hi: int, column: str) -> None:
    """Ids in 0..hi-1, or UNKNOWN (the source does not know this row's value)."""
    bad = _out_of_range(values, 0, hi) & (values != contracts.UNKNOWN)
    report.add(rule, bad, f"{column} outside 0..{hi - 1} (or {contracts.UNKNOWN}: unknown)")


def validate_users(users: pa.Table, city_id: int | None = None, vocabulary: Vocabulary = BUILTIN) -> pd.DataFrame:
    """Contract rules for users; with city_id, every user must live in that city (its partition).

    Rules about a column `completion` filled in (the source did not give it) are not checked:
    its values are defaults, not data."""
    schema = check_schema(users, "users", vocabulary)
    if len(schema):
        return schema
    given = _given(users)
    ids = users.column("user_id").to_numpy(zero_copy_only=False)
    report = Report("users", ids)
    _null_rows(users, report, contracts.OPTIONAL_COLUMNS["users"])
    _unique(report, ids, "user_id")
    report.add("id_range", ids < 0, "user_id is negative")
    city = users.column("home_city_id").fill_null(pa.scalar(-1)).to_numpy()
    n_cities = vocabulary.n_cities
    report.add("city_range", _out_of_range(city, 0, n_cities), f"home_city_id outside 0..{n_cities - 1}")
    if city_id is not None:
        report.add("partition", city != city_id, f"home_city_id is not this partition's city {city_id}")
    if "home_neighborhood_id" in given:
        nbhd = users.column("home_neighborhood_id").fill_null(pa.scalar(-2)).to_numpy()
        _neighborhood_range(report, "neighborhood_range", city, nbhd, vocabulary, "home_neighborhood_id")
    for name in ("cat_pref", "fine_pref", "vibe_pref"):
        if name in given:
            _check_simplex(report, contracts.list_matrix(users, name), name)
    if "area_freqs" in given:
        _check_area_freqs(users, report, vocabulary)
    for name in ("avg_sessions_per_week", "avg_views_per_session"):
        if name in given:
            v = users.column(name).fill_null(pa.scalar(np.nan)).to_numpy()
            report.add("positive", ~(np.isfinite(v) & (v > 0)), f"{name} must be finite and > 0")
    for name in ("avg_likes_per_session", "avg_saves_per_session", "avg_attends_per_month"):
        if name in given:
            v = users.column(name).fill_null(pa.scalar(np.nan)).to_numpy()
            report.add("non_negative", ~(np.isfinite(v) & (v >= 0)), f"{name} must be finite and >= 0")
    if contracts.DISPLAY_NAME in users.column_names:
        _check_display_names(users, report)
    return report.frame()


def _check_display_names(users: pa.Table, report: Report) -> None:
    """A name is optional per user (null: none), but one that is there is a short, printable name."""
    names = users.column(contracts.DISPLAY_NAME)
    length = pc.utf8_length(names).fill_null(0).to_numpy()
    limit = contracts.MAX_DISPLAY_NAME_CHARS
    report.add("display_name_length", length > limit, f"display_name is longer than {limit} characters")
    blank = pc.equal(pc.utf8_trim_whitespace(names), pa.scalar("")).fill_null(False).to_numpy(zero_copy_only=False)
    report.add("display_name_blank", blank, "display_name is empty (leave it null for a user without a name)")


def _given(table: pa.Table) -> set[str]:
    """The columns the source gave (not filled in by `completion`)."""
    return set(table.column_names) - contracts.filled_columns(table)


def _check_area_freqs(users: pa.Table, report: Report, vocabulary: Vocabulary) -> None:
    col = users.column("area_freqs").combine_chunks()
    if not isinstance(col, pa.MapArray):
        raise TypeError(f"area_freqs must be a map column, got {col.type}")
    lengths = np.diff(col.offsets.to_numpy())
    rows = np.repeat(np.arange(len(col)), lengths)
    keys = col.keys.to_numpy(zero_copy_only=False)
    values = col.items.to_numpy(zero_copy_only=False).astype(np.float64)
    n = len(col)
    report.add("area_freqs_empty", lengths == 0, "area_freqs is empty")
    bad_key = np.zeros(n, bool)
    slots = vocabulary.n_neighborhoods
    np.logical_or.at(bad_key, rows, (keys < 0) | (keys >= slots))
    report.add("area_freqs_keys", bad_key, f"area_freqs has a neighbourhood id outside 0..{slots - 1}")
    bad_value = np.zeros(n, bool)
    np.logical_or.at(bad_value, rows, ~(np.isfinite(values) & (values >= 0)))
    report.add("area_freqs_values", bad_value, "area_freqs has a negative or non-finite weight")
    sums = np.bincount(rows, weights=np.nan_to_num(values), minlength=n)
    report.add("sums_to_one", (lengths > 0) & (np.abs(sums - 1.0) > SUM_TOLERANCE), "area_freqs does not sum to 1")


def validate_places(places: pa.Table, city_id: int | None = None, vocabulary: Vocabulary = BUILTIN) -> pd.DataFrame:
    """Contract rules for places; rules about a column `completion` filled in are not checked."""
    schema = check_schema(places, "places", vocabulary)
    if len(schema):
        return schema
    given = _given(places)
    ids = places.column("place_id").to_numpy(zero_copy_only=False)
    report = Report("places", ids)
    _null_rows(places, report)
    _unique(report, ids, "place_id")
    report.add("id_range", ids < 0, "place_id is negative")
    city = places.column("city_id").fill_null(pa.scalar(-1)).to_numpy()
    report.add(
        "city_range", _out_of_range(city, 0, vocabulary.n_cities), f"city_id outside 0..{vocabulary.n_cities - 1}"
    )
    if city_id is not None:
        report.add("partition", city != city_id, f"city_id is not this partition's city {city_id}")
    if "neighborhood_id" in given:
        neighborhood = places.column("neighborhood_id").fill_null(pa.scalar(-2)).to_numpy()
        _neighborhood_range(report, "neighborhood_id_range", city, neighborhood, vocabulary, "neighborhood_id")
    for name, hi in (
        ("price_band", len(vocabulary.price_bands)),
        ("typical_time_slot", len(vocabulary.time_slots)),
    ):
        if name in given:
            _ids_or_unknown(report, f"{name}_range", places.column(name).fill_null(pa.scalar(-2)).to_numpy(), hi, name)
    if "category_ids" in given:
        _check_categories(places, report, vocabulary)
    if "fine_tag_vector" in given:
        _check_simplex(report, contracts.list_matrix(places, "fine_tag_vector"), "fine_tag_vector")
    for name in ("base_popularity", "avg_daily_visits"):
        if name in given:
            v = places.column(name).fill_null(pa.scalar(np.nan)).to_numpy()
            report.add("non_negative", ~(np.isfinite(v) & (v >= 0)), f"{name} must be finite and >= 0")
    for name in ("conversion_rate", "novelty_score"):
        if name in given:
            v = places.column(name).fill_null(pa.scalar(np.nan)).to_numpy()
            report.add("unit_interval", ~((v >= 0) & (v <= 1)), f"{name} outside [0, 1]")
    return report.frame()


def _check_categories(places: pa.Table, report: Report, vocabulary: Vocabulary) -> None:
    """category_ids non-empty and in range, and category_one_hot agreeing with them."""
    one_hot = contracts.list_matrix(places, "category_one_hot")
    report.add(
        "category_one_hot_range", ~((one_hot >= 0) & (one_hot <= 1)).all(axis=1), "category_one_hot outside [0, 1]"
    )
    cat_col = places.column("category_ids").combine_chunks()
    if not isinstance(cat_col, pa.ListArray):
        raise TypeError(f"category_ids must be a list column, got {cat_col.type}")
    lengths = np.diff(cat_col.offsets.to_numpy())
    cats = cat_col.values.to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(cat_col)), lengths)
    report.add("category_ids_empty", lengths == 0, "category_ids is empty")
    n_categories = len(vocabulary.categories)
    valid = (cats >= 0) & (cats < n_categories)
    bad = np.zeros(len(cat_col), bool)
    np.logical_or.at(bad, rows, ~valid)
    report.add("category_ids_range", bad, f"category_ids outside 0..{n_categories - 1}")
    listed = np.zeros_like(one_hot, dtype=bool)
    listed[rows[valid], cats[valid]] = True
    report.add(
        "category_consistency", ((one_hot > 0) != listed).any(axis=1), "category_one_hot disagrees with category_ids"
    )


def first_occurrence(table: pa.Table) -> np.ndarray:
    """For every row, the index of the first row equal to it in every column (itself if none)."""
    if table.num_rows == 0:
        return np.zeros(0, np.int64)
    groups = table.to_pandas().groupby(table.column_names, dropna=False, sort=False).ngroup().to_numpy()
    first = np.full(groups.max() + 1, table.num_rows, np.int64)
    np.minimum.at(first, groups, np.arange(table.num_rows))
    return first[groups]


def validate_interactions(
    interactions: pa.Table,
    user_ids: np.ndarray,
    place_ids: np.ndarray,
    now: np.datetime64 | None = None,
    unique_rows: bool = False,
) -> pd.DataFrame:
    """Contract rules plus referential integrity: users of this partition, places of any city.

    `now`: timestamps after it are violations. `unique_rows`: a row that repeats an earlier
    one in every column is a violation (new-data files; the generator's world may repeat
    an event's user, place and time, never a whole row)."""
    schema = check_schema(interactions, "interactions")
    if len(schema):
        return schema
    u = interactions.column("user_id").fill_null(pa.scalar(-1)).to_numpy()
    p = interactions.column("place_id").fill_null(pa.scalar(-1)).to_numpy()
    report = Report("interactions", np.char.add(np.char.add(u.astype(str), ":"), p.astype(str)))
    _null_rows(interactions, report)
    report.add("unknown_user", ~np.isin(u, user_ids), "user_id is not a user of this city")
    report.add("unknown_place", ~np.isin(p, place_ids), "place_id is not a known place")
    dwell = interactions.column("dwell_time").fill_null(pa.scalar(np.nan)).to_numpy()
    report.add("dwell_time", ~(np.isfinite(dwell) & (dwell >= 0)), "dwell_time must be finite and >= 0")
    counts = {}
    for name in ("num_likes", "num_saves", "num_shares"):
        counts[name] = interactions.column(name).fill_null(pa.scalar(-1)).to_numpy()
        report.add("non_negative", counts[name] < 0, f"{name} is negative")
    attended = interactions.column("attended").fill_null(pa.scalar(False)).to_numpy(zero_copy_only=False)
    rating = interactions.column("implicit_rating").fill_null(pa.scalar(np.nan)).to_numpy()
    expected = contracts.implicit_rating(
        dwell, counts["num_likes"], counts["num_saves"], counts["num_shares"], attended
    )
    report.add("rating_range", ~((rating >= 1) & (rating <= 5)), "implicit_rating outside [1, 5]")
    report.add(
        "rating_formula",
        ~(np.abs(rating - expected) <= RATING_TOLERANCE),
        "implicit_rating disagrees with the 1-5 formula",
    )

    count = interactions.column("count").fill_null(pa.scalar(0)).to_numpy()
    report.add("count_positive", count < 1, "count must be at least 1")
    ts = interactions.column("timestamp")
    micros = ts.cast(pa.int64()).fill_null(pa.scalar(0)).to_numpy()
    expected_tod, expected_weekend = contracts.time_buckets(micros)
    tod = interactions.column("time_of_day_bucket").fill_null(pa.scalar(-1)).to_numpy()
    dow = interactions.column("day_of_week_bucket").fill_null(pa.scalar(-1)).to_numpy()
    report.add("time_of_day_range", _out_of_range(tod, 0, N_TIME_OF_DAY_BUCKETS), "time_of_day_bucket outside 0..3")
    report.add("day_of_week_range", _out_of_range(dow, 0, N_DAY_OF_WEEK_BUCKETS), "day_of_week_bucket outside 0..1")
    report.add(
        "time_of_day_consistency", tod != expected_tod, "time_of_day_bucket disagrees with the timestamp's hour (UTC)"
    )
    report.add(
        "day_of_week_consistency", dow != expected_weekend, "day_of_week_bucket disagrees with the timestamp's weekday"
    )
    if now is not None:
        future = micros > now.astype("datetime64[us]").astype(np.int64)
        report.add("future_timestamp", future, f"timestamp is in the future (after {now.astype('datetime64[s]')} UTC)")
    if unique_rows:
        first = first_occurrence(interactions)
        repeats = first != np.arange(len(first))
        report.add("duplicate_row", repeats, np.char.add("repeats row ", first.astype(str)))
    return report.frame()


def validate_user_user_edges(edges: pa.Table, user_ids: np.ndarray) -> pd.DataFrame:
    schema = check_schema(edges, "user_user_edges")
    if len(schema):
        return schema
    u = edges.column("user_u").fill_null(pa.scalar(-1)).to_numpy()
    v = edges.column("user_v").fill_null(pa.scalar(-1)).to_numpy()
    report = Report("user_user_edges", np.char.add(np.char.add(u.astype(str), "-"), v.astype(str)))
    _null_rows(edges, report)
    report.add("self_edge", u == v, "user_u equals user_v")
    report.add("ordered_pair", u > v, "user_u must be smaller than user_v")
    report.add("unique_pair", pd.DataFrame({"u": u, "v": v}).duplicated(keep=False).to_numpy(), "pair is duplicated")
    report.add("unknown_user", ~(np.isin(u, user_ids) & np.isin(v, user_ids)), "user is not a user of this city")
    for name in ("interest_overlap_score", "same_neighborhood_freq"):
        x = edges.column(name).fill_null(pa.scalar(np.nan)).to_numpy()
        report.add("unit_interval", ~((x >= 0) & (x <= 1)), f"{name} outside [0, 1]")
    co = edges.column("co_attendance_count").fill_null(pa.scalar(-1)).to_numpy()
    report.add("non_negative", co < 0, "co_attendance_count is negative")
    return report.frame()


def validate_friend_labels(labels: pa.Table, users: pa.Table, interactions: pa.Table) -> pd.DataFrame:
    """Contract rules plus the label rules, recomputed from users (overlap) and interactions (co-attendance).

    The rules hold labels made by them (the synthetic world's, or a source's that follows the
    specification); labels derived from declared friendships, or of users without taste
    vectors, are held to the structural rules only."""
    schema = check_schema(labels, "friend_labels")
    if len(schema):
        return schema
    u = labels.column("user_u").fill_null(pa.scalar(-1)).to_numpy()
    v = labels.column("user_v").fill_null(pa.scalar(-1)).to_numpy()
    report = Report("friend_labels", np.char.add(np.char.add(u.astype(str), "-"), v.astype(str)))
    _null_rows(labels, report)
    compat = labels.column("label_compat").fill_null(pa.scalar(-1)).to_numpy()
    attend = labels.column("label_attend").fill_null(pa.scalar(-1)).to_numpy()
    report.add("self_pair", u == v, "user_u equals user_v")
    report.add("ordered_pair", u > v, "user_u must be smaller than user_v")
    report.add("unique_pair", pd.DataFrame({"u": u, "v": v}).duplicated(keep=False).to_numpy(), "pair is duplicated")
    report.add("binary", ~np.isin(compat, [0, 1]) | ~np.isin(attend, [0, 1]), "labels must be 0 or 1")
    report.add(
        "attend_needs_compat", (compat == 0) & (attend != 0), "an incompatible pair cannot have label_attend = 1"
    )

    # First occurrence wins; duplicate user ids are the users check's to report.
    ids = pd.Index(users.column("user_id").to_numpy())
    first = ~ids.duplicated()
    unique_ids = ids[first]
    rows = np.flatnonzero(first)
    iu, iv = unique_ids.get_indexer(u), unique_ids.get_indexer(v)
    iu, iv = np.where(iu >= 0, rows[iu], -1), np.where(iv >= 0, rows[iv], -1)
    known = (iu >= 0) & (iv >= 0)
    report.add("unknown_user", ~known, "user is not a user of this city")
    if contracts.derived_columns(labels) or "fine_pref" not in _given(users):
        # Labels derived from friendships, or users without tastes: the overlap rule does not apply.
        return report.frame()
    unit = social.unit_rows(contracts.list_matrix(users, "fine_pref"))
    overlap = np.full(len(u), np.nan, np.float32)
    overlap[known] = social.pair_cosine(unit, iu[known], iv[known])
    co = social.lookup_pair_counts(social.co_attendance_counts(interactions), u, v)
    rule = social.compatibility_label(overlap, co)
    # Labels are checked against the rule with a small tolerance on the overlap thresholds.
    near = np.isclose(overlap, contracts.POSITIVE_OVERLAP, atol=1e-4) | np.isclose(
        overlap, contracts.NEGATIVE_OVERLAP, atol=1e-4
    )
    report.add(
        "positive_rule",
        known & ~near & (compat == 1) & (rule != 1),
        "label_compat = 1 but overlap < 0.6 and co-attendance < 2",
    )
    report.add(
        "negative_rule",
        known & ~near & (compat == 0) & (rule != 0),
        "label_compat = 0 but overlap >= 0.3 or they co-attended",
    )
    return report.frame()
