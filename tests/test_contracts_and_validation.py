"""Contracts (exact schemas, the rating formula, conform) and the validators on clean and corrupted tables.

Each corruption test changes one (or two) rows of an otherwise valid generated table and
asserts the validator flags exactly those rows, by row index and by domain key, with a reason.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys_core import contracts, validation

F32, I32, I64 = pa.float32(), pa.int32(), pa.int64()

# The column lists, spelled out independently of recsys_core.contracts.
SPEC = {
    "users": [
        ("user_id", I64),
        ("home_city_id", I32),
        ("home_neighborhood_id", I32),
        ("cat_pref", pa.list_(F32, 6)),
        ("fine_pref", pa.list_(F32, 100)),
        ("vibe_pref", pa.list_(F32, 30)),
        ("area_freqs", pa.map_(I32, F32)),
        ("avg_sessions_per_week", F32),
        ("avg_views_per_session", F32),
        ("avg_likes_per_session", F32),
        ("avg_saves_per_session", F32),
        ("avg_attends_per_month", F32),
    ],
    "places": [
        ("place_id", I64),
        ("city_id", I32),
        ("neighborhood_id", I32),
        ("category_ids", pa.list_(I32)),
        ("category_one_hot", pa.list_(F32, 6)),
        ("fine_tag_vector", pa.list_(F32, 100)),
        ("price_band", I32),
        ("typical_time_slot", I32),
        ("base_popularity", F32),
        ("avg_daily_visits", F32),
        ("conversion_rate", F32),
        ("novelty_score", F32),
    ],
    "interactions": [
        ("user_id", I64),
        ("place_id", I64),
        ("dwell_time", F32),
        ("num_likes", I32),
        ("num_saves", I32),
        ("num_shares", I32),
        ("attended", pa.bool_()),
        ("implicit_rating", F32),
        ("timestamp", None),
        ("time_of_day_bucket", I32),
        ("day_of_week_bucket", I32),
        ("count", I32),  # not in the specification: "Any data in" (#15) gives events a count (listens, repeat visits)
    ],
    "user_user_edges": [
        ("user_u", I64),
        ("user_v", I64),
        ("interest_overlap_score", F32),
        ("co_attendance_count", I32),
        ("same_neighborhood_freq", F32),
    ],
    "friend_labels": [("user_u", I64), ("user_v", I64), ("label_compat", I32), ("label_attend", I32)],
}


# --------------------------------------------------------------------------- helpers


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    field = table.schema.field(name)
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, field.type)
    return table.set_column(table.schema.get_field_index(name), field, array)


def set_values(table: pa.Table, name: str, rows, value) -> pa.Table:
    values = table.column(name).to_numpy(zero_copy_only=False).copy()
    values[rows] = value
    return set_column(table, name, values)


def edit_vector(table: pa.Table, name: str, row: int, edit) -> pa.Table:
    """Apply `edit` to one row of a fixed-size list column (as a float32 vector)."""
    matrix = contracts.list_matrix(table, name)
    matrix[row] = edit(matrix[row].copy())
    return set_column(table, name, pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), F32), matrix.shape[1]))


def edit_pylist(table: pa.Table, name: str, row: int, value) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] = value
    return set_column(table, name, values)


def flagged_rows(violations: pd.DataFrame) -> set[int]:
    return set(violations["row"].astype(int))


def assert_flags_exactly(violations: pd.DataFrame, rows, key_parts, rule: str) -> None:
    """Exactly `rows` are flagged, `rule` is among the reasons, each key names the row's ids."""
    assert flagged_rows(violations) == set(rows), violations
    assert rule in set(violations["rule"]), violations
    assert violations["reason"].str.len().gt(0).all()
    for key in violations["key"]:
        assert all(str(part) in key for part in key_parts), (key, key_parts)


def user_ids(world) -> np.ndarray:
    return world["users"].column("user_id").to_numpy()


def place_ids(world) -> np.ndarray:
    return world["places"].column("place_id").to_numpy()


def validate_interactions(world, interactions, **kwargs):
    return validation.validate_interactions(interactions, user_ids(world), place_ids(world), **kwargs)


def pair_overlap(world, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Cosine of fine_pref, computed here in float64 (independently of recsys_core.social)."""
    fine = contracts.list_matrix(world["users"], "fine_pref").astype(np.float64)
    fine /= np.linalg.norm(fine, axis=1, keepdims=True)
    index = pd.Index(user_ids(world))
    return np.einsum("ij,ij->i", fine[index.get_indexer(u)], fine[index.get_indexer(v)])


# --------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", list(SPEC))
def test_contract_schema_has_the_specified_columns_and_types(name):
    schema = contracts.SCHEMAS[name]
    assert schema.names == [column for column, _ in SPEC[name]]
    for column, expected in SPEC[name]:
        actual = schema.field(column).type
        if expected is None:  # timestamp: the spec names no unit
            assert pa.types.is_timestamp(actual)
        else:
            assert actual == expected, column


@pytest.mark.parametrize("name", list(SPEC))
def test_generated_tables_have_the_contract_schema(world, name):
    expected = contracts.SCHEMAS[name]
    for field in contracts.optional_fields(world[name], name):  # the synthetic users have names
        expected = expected.append(field)
    assert world[name].schema.equals(expected)
    assert (contracts.DISPLAY_NAME in world[name].column_names) == (name == "users")


@pytest.mark.parametrize(
    "dwell, likes, saves, shares, attended, expected",
    [
        (0.0, 0, 0, 0, False, 1.0),
        (75.0, 1, 0, 0, False, 2.0),  # 1 + 0.5 + 0.5
        (30.0, 3, 0, 0, False, 2.7),  # 1 + 0.2 + 1.5
        (150.0, 1, 1, 1, False, 4.0),  # 1 + 1 + 0.5 + 1 + 0.5
        (0.0, 0, 0, 0, True, 3.0),  # attended counts 2
        (300.0, 0, 5, 0, False, 5.0),  # dwell capped at 2, saves capped at 2
        (900.0, 10, 10, 10, True, 5.0),  # total capped at 5
        (60.0, 1, 0, 4, False, 2.9),  # 1 + 0.4 + 0.5 + 1 (shares capped)
    ],
)
def test_implicit_rating_formula(dwell, likes, saves, shares, attended, expected):
    rating = contracts.implicit_rating(
        np.array([dwell], np.float32), np.array([likes]), np.array([saves]), np.array([shares]), np.array([attended])
    )
    assert rating.dtype == np.float32
    assert rating[0] == pytest.approx(expected, abs=1e-5)


def test_list_matrix_round_trips_through_list_array():
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    table = pa.table({"v": contracts.matrix_to_list_array(matrix)})
    assert table.schema.field("v").type == pa.list_(F32, 3)
    np.testing.assert_array_equal(contracts.list_matrix(table, "v"), matrix)


def test_map_matrix_places_weights_in_their_slots_and_drops_foreign_keys():
    col = pa.array([[(0, 0.25), (3, 0.75)], [(15, 1.0)], None, [(2, 1.0)]], pa.map_(I32, F32))
    dense = contracts.map_matrix(pa.table({"a": col}), "a", 15)
    expected = np.zeros((4, 15), np.float32)
    expected[0, [0, 3]] = [0.25, 0.75]
    expected[3, 2] = 1.0
    np.testing.assert_array_equal(dense, expected)


def test_conform_orders_casts_and_drops_extra_columns(world):
    edges = world["user_user_edges"].slice(0, 5)
    loose = pa.table(
        {
            "extra": pa.array(range(5)),
            "same_neighborhood_freq": edges.column("same_neighborhood_freq").cast(pa.float64()),
            "co_attendance_count": edges.column("co_attendance_count").cast(I64),
            "interest_overlap_score": edges.column("interest_overlap_score"),
            "user_v": edges.column("user_v").cast(I32),
            "user_u": edges.column("user_u"),
        }
    )
    conformed = contracts.conform(loose, "user_user_edges")
    assert conformed.schema.equals(contracts.USER_USER_EDGES)
    assert conformed.equals(edges.combine_chunks())


def test_conform_names_every_missing_column(world):
    users = world["users"].drop_columns(["fine_pref", "avg_attends_per_month"])
    with pytest.raises(ValueError, match="fine_pref.*avg_attends_per_month"):
        contracts.conform(users, "users")


def test_conform_refuses_an_uncastable_column(world):
    labels = world["friend_labels"]
    labels = labels.set_column(
        labels.schema.get_field_index("label_attend"), "label_attend", pa.array(["yes"] * labels.num_rows)
    )
    with pytest.raises(ValueError, match="label_attend"):
        contracts.conform(labels, "friend_labels")


# --------------------------------------------------------------------------- clean world


def test_clean_users_and_places_have_no_violations(world):
    assert validation.validate_users(world["users"]).empty
    assert validation.validate_places(world["places"]).empty


def test_clean_interactions_have_no_violations(world):
    assert validate_interactions(world, world["interactions"], now=np.datetime64("2030-01-01")).empty


def test_clean_social_tables_have_no_violations(world):
    assert validation.validate_user_user_edges(world["user_user_edges"], user_ids(world)).empty
    assert validation.validate_friend_labels(world["friend_labels"], world["users"], world["interactions"]).empty


def test_violation_frame_has_rule_row_key_reason_columns(world):
    broken = set_values(world["users"], "avg_sessions_per_week", 3, -1.0)
    violations = validation.validate_users(broken)
    assert list(violations.columns) == ["rule", "row", "key", "reason"]
    assert list(validation.validate_users(world["users"]).columns) == ["rule", "row", "key", "reason"]


# --------------------------------------------------------------------------- schema violations


def test_missing_column_is_a_table_level_violation_naming_it(world):
    violations = validation.validate_places(world["places"].drop_columns(["price_band"]))
    assert len(violations) == 1
    assert violations["row"].iloc[0] == -1
    assert "price_band" in violations["reason"].iloc[0]


def test_wrong_column_type_names_column_and_types(world):
    users = world["users"]
    broken = users.set_column(0, pa.field("user_id", I32), users.column("user_id").cast(I32))
    violations = validation.validate_users(broken)
    assert len(violations) == 1
    assert {"user_id", "int32", "int64"} <= set(violations["reason"].iloc[0].replace(",", " ").split())


def test_unexpected_column_is_reported(world):
    violations = validation.validate_user_user_edges(
        world["user_user_edges"].append_column("weight", pa.array(np.ones(world["user_user_edges"].num_rows))),
        user_ids(world),
    )
    assert violations["reason"].str.contains("weight").any()


# --------------------------------------------------------------------------- users


def test_nan_in_preference_vector_flags_that_user(world):
    row = 17
    broken = edit_vector(world["users"], "fine_pref", row, lambda v: np.where(np.arange(100) == 5, np.nan, v))
    violations = validation.validate_users(broken)
    assert_flags_exactly(violations, [row], [user_ids(world)[row]], "finite")
    assert violations["reason"].str.contains("fine_pref").all()


def test_preference_not_summing_to_one_flags_that_user(world):
    row = 250
    broken = edit_vector(world["users"], "cat_pref", row, lambda v: v * 1.5)
    violations = validation.validate_users(broken)
    assert_flags_exactly(violations, [row], [user_ids(world)[row]], "sums_to_one")
    assert violations["reason"].str.contains("cat_pref").all()


def test_negative_vibe_weight_flags_that_user(world):
    row = 3
    shift = np.where(np.arange(30) == 0, -1.0, 0.0) + np.where(np.arange(30) == 1, 1.0, 0.0)  # sum stays 1
    broken = edit_vector(world["users"], "vibe_pref", row, lambda v: v + shift)
    violations = validation.validate_users(broken)
    assert flagged_rows(violations) == {row}
    assert "non_negative" in set(violations["rule"])


def test_duplicate_user_id_flags_both_rows(world):
    first, second = 10, 600
    ids = user_ids(world)
    broken = set_values(world["users"], "user_id", second, ids[first])
    violations = validation.validate_users(broken)
    assert_flags_exactly(violations, [first, second], [ids[first]], "unique_id")


def test_area_freqs_with_unknown_neighbourhood_flags_that_user(world):
    row = 42
    broken = edit_pylist(world["users"], "area_freqs", row, [(15, 1.0)])
    violations = validation.validate_users(broken)
    assert_flags_exactly(violations, [row], [user_ids(world)[row]], "area_freqs_keys")


def test_area_freqs_not_summing_to_one_flags_that_user(world):
    row = 99
    entries = world["users"].column("area_freqs")[row].as_py()
    broken = edit_pylist(world["users"], "area_freqs", row, [(k, 2 * w) for k, w in entries])
    violations = validation.validate_users(broken)
    assert_flags_exactly(violations, [row], [user_ids(world)[row]], "sums_to_one")


def test_user_outside_the_partition_city_is_flagged(world):
    users = world["users"]
    city = users.column("home_city_id").to_numpy()
    violations = validation.validate_users(users, city_id=3)
    assert flagged_rows(violations) == set(np.flatnonzero(city != 3))
    assert set(violations["rule"]) == {"partition"}


def test_every_violation_is_reported_not_just_the_first(world):
    users = world["users"]
    broken = edit_vector(users, "fine_pref", 5, lambda v: v * np.nan)
    broken = set_values(broken, "home_neighborhood_id", 50, 15)
    broken = set_values(broken, "avg_views_per_session", 500, 0.0)
    violations = validation.validate_users(broken)
    assert flagged_rows(violations) == {5, 50, 500}
    rules_by_row = violations.groupby("row")["rule"].agg(set)
    assert "finite" in rules_by_row[5]
    assert "neighborhood_range" in rules_by_row[50]
    assert "positive" in rules_by_row[500]


def test_null_value_is_flagged_not_raised(world):
    row = 7
    broken = edit_pylist(world["users"], "avg_likes_per_session", row, None)
    violations = validation.validate_users(broken)
    assert flagged_rows(violations) == {row}
    assert "not_null" in set(violations["rule"])


def test_friend_label_validation_reports_rather_than_raises_on_duplicate_users(world):
    ids = user_ids(world)
    users = set_values(world["users"], "user_id", 1, ids[0])
    violations = validation.validate_friend_labels(world["friend_labels"], users, world["interactions"])
    assert isinstance(violations, pd.DataFrame)


# --------------------------------------------------------------------------- places


def test_fine_tags_not_summing_to_one_flags_that_place(world):
    row = 123
    broken = edit_vector(world["places"], "fine_tag_vector", row, lambda v: v * 2)
    violations = validation.validate_places(broken)
    assert_flags_exactly(violations, [row], [place_ids(world)[row]], "sums_to_one")


def test_category_ids_disagreeing_with_one_hot_flags_that_place(world):
    row = 321
    categories = world["places"].column("category_ids")[row].as_py()
    other = next(c for c in range(6) if c not in categories)
    broken = edit_pylist(world["places"], "category_ids", row, [other])
    violations = validation.validate_places(broken)
    assert_flags_exactly(violations, [row], [place_ids(world)[row]], "category_consistency")


@pytest.mark.parametrize(
    "column, value",
    [("price_band", 5), ("typical_time_slot", 6), ("neighborhood_id", -2), ("price_band", -2), ("neighborhood_id", 15)],
)
def test_out_of_range_place_code_flags_that_place(world, column, value):
    row = 77
    violations = validation.validate_places(set_values(world["places"], column, row, value))
    assert_flags_exactly(violations, [row], [place_ids(world)[row]], f"{column}_range")


@pytest.mark.parametrize("column", ["price_band", "typical_time_slot", "neighborhood_id"])
def test_unknown_place_code_is_allowed(world, column):
    """-1 (contracts.UNKNOWN) says the source does not know this place's value; it is no violation."""
    violations = validation.validate_places(set_values(world["places"], column, 77, contracts.UNKNOWN))
    assert violations.empty, violations


# --------------------------------------------------------------------------- interactions


def _interaction_key(world, row):
    it = world["interactions"]
    return [it.column("user_id")[row].as_py(), it.column("place_id")[row].as_py()]


def test_unknown_place_id_flags_that_interaction(world):
    row = 1000
    unknown = int(place_ids(world).max()) + 12345
    broken = set_values(world["interactions"], "place_id", row, unknown)
    violations = validate_interactions(world, broken)
    user = world["interactions"].column("user_id")[row].as_py()
    assert_flags_exactly(violations, [row], [user, unknown], "unknown_place")


def test_unknown_user_id_flags_that_interaction(world):
    row = 5
    broken = set_values(world["interactions"], "user_id", row, 10**9)
    violations = validate_interactions(world, broken)
    assert_flags_exactly(violations, [row], [10**9], "unknown_user")


def test_rating_disagreeing_with_formula_flags_that_interaction(world):
    row = 2024
    rating = world["interactions"].column("implicit_rating")[row].as_py()
    broken = set_values(world["interactions"], "implicit_rating", row, rating + 0.5 if rating <= 4.5 else rating - 0.5)
    violations = validate_interactions(world, broken)
    assert_flags_exactly(violations, [row], _interaction_key(world, row), "rating_formula")


def test_time_bucket_disagreeing_with_timestamp_flags_that_interaction(world):
    row = 31
    bucket = world["interactions"].column("time_of_day_bucket")[row].as_py()
    broken = set_values(world["interactions"], "time_of_day_bucket", row, (bucket + 1) % 4)
    violations = validate_interactions(world, broken)
    assert_flags_exactly(violations, [row], _interaction_key(world, row), "time_of_day_consistency")


def test_future_timestamp_flags_that_interaction(world):
    row = 64
    it = world["interactions"]
    ts = it.column("timestamp").to_numpy().copy()
    ts[row] = ts[row] + np.timedelta64(7 * 52 * 4, "D")  # whole weeks: weekday and hour unchanged
    broken = set_column(it, "timestamp", pa.array(ts, it.schema.field("timestamp").type))
    now = ts[np.arange(len(ts)) != row].max() + np.timedelta64(1, "D")
    violations = validate_interactions(world, broken, now=now)
    assert_flags_exactly(violations, [row], _interaction_key(world, row), "future_timestamp")


def test_negative_count_flags_that_interaction(world):
    row = 8
    violations = validate_interactions(world, set_values(world["interactions"], "num_shares", row, -1))
    assert flagged_rows(violations) == {row}
    assert "non_negative" in set(violations["rule"])


# --------------------------------------------------------------------------- user-user edges


def _edge_pair(table, row):
    return table.column("user_u")[row].as_py(), table.column("user_v")[row].as_py()


def test_self_edge_flags_that_edge(world):
    edges, row = world["user_user_edges"], 12
    u, _ = _edge_pair(edges, row)
    violations = validation.validate_user_user_edges(set_values(edges, "user_v", row, u), user_ids(world))
    assert_flags_exactly(violations, [row], [u], "self_edge")


def test_reversed_pair_flags_that_edge(world):
    edges, row = world["user_user_edges"], 40
    u, v = _edge_pair(edges, row)
    broken = set_values(set_values(edges, "user_u", row, v), "user_v", row, u)
    violations = validation.validate_user_user_edges(broken, user_ids(world))
    assert_flags_exactly(violations, [row], [u, v], "ordered_pair")


def test_duplicate_edge_flags_both_rows(world):
    edges = world["user_user_edges"]
    u, v = _edge_pair(edges, 0)
    broken = set_values(set_values(edges, "user_u", 9, u), "user_v", 9, v)
    violations = validation.validate_user_user_edges(broken, user_ids(world))
    assert_flags_exactly(violations, [0, 9], [u, v], "unique_pair")


def test_edge_score_out_of_range_flags_that_edge(world):
    edges, row = world["user_user_edges"], 100
    violations = validation.validate_user_user_edges(
        set_values(edges, "interest_overlap_score", row, 1.5), user_ids(world)
    )
    assert_flags_exactly(violations, [row], list(_edge_pair(edges, row)), "unit_interval")


# --------------------------------------------------------------------------- friend labels


def _label_row(world, compat: int, attend: int, overlap_ok) -> int:
    labels = world["friend_labels"]
    u, v = labels.column("user_u").to_numpy(), labels.column("user_v").to_numpy()
    overlap = pair_overlap(world, u, v)
    chosen = np.flatnonzero(
        (labels.column("label_compat").to_numpy() == compat)
        & (labels.column("label_attend").to_numpy() == attend)
        & overlap_ok(overlap)
    )
    assert len(chosen), "the small world should contain such a label"
    return int(chosen[0])


def validate_labels(world, labels):
    return validation.validate_friend_labels(labels, world["users"], world["interactions"])


def test_high_overlap_pair_labelled_incompatible_is_flagged(world):
    row = _label_row(world, compat=1, attend=0, overlap_ok=lambda o: o >= 0.65)
    labels = world["friend_labels"]
    violations = validate_labels(world, set_values(labels, "label_compat", row, 0))
    assert_flags_exactly(violations, [row], list(_edge_pair(labels, row)), "negative_rule")


def test_dissimilar_pair_labelled_compatible_is_flagged(world):
    row = _label_row(world, compat=0, attend=0, overlap_ok=lambda o: o < 0.25)
    labels = world["friend_labels"]
    violations = validate_labels(world, set_values(labels, "label_compat", row, 1))
    assert_flags_exactly(violations, [row], list(_edge_pair(labels, row)), "positive_rule")


def test_attendance_on_incompatible_pair_is_flagged(world):
    row = _label_row(world, compat=0, attend=0, overlap_ok=lambda o: o < 0.25)
    labels = world["friend_labels"]
    violations = validate_labels(world, set_values(labels, "label_attend", row, 1))
    assert_flags_exactly(violations, [row], list(_edge_pair(labels, row)), "attend_needs_compat")


def test_negative_label_of_a_pair_that_co_attended_is_flagged(world):
    labels = world["friend_labels"]
    row = _label_row(world, compat=0, attend=0, overlap_ok=lambda o: o < 0.25)
    u, v = _edge_pair(labels, row)
    it = world["interactions"]
    outing = it.slice(0, 1).to_pylist()[0] | {"attended": True}
    together = pa.Table.from_pylist([outing | {"user_id": u}, outing | {"user_id": v}], schema=it.schema)
    violations = validation.validate_friend_labels(labels, world["users"], pa.concat_tables([it, together]))
    assert_flags_exactly(violations, [row], [u, v], "negative_rule")


def test_label_pair_out_of_order_is_flagged(world):
    labels, row = world["friend_labels"], 3
    u, v = _edge_pair(labels, row)
    broken = set_values(set_values(labels, "user_u", row, v), "user_v", row, u)
    violations = validate_labels(world, broken)
    assert_flags_exactly(violations, [row], [u, v], "ordered_pair")


def test_co_attendance_positive_without_co_attendance_is_flagged(world):
    """A positive that rests only on co-attendance breaks the rule once that co-attendance is gone."""
    labels = world["friend_labels"]
    row = _label_row(world, compat=1, attend=0, overlap_ok=lambda o: o < 0.55)
    u, v = _edge_pair(labels, row)
    it = world["interactions"]
    users = it.column("user_id").to_numpy()
    attended = it.column("attended").to_numpy(zero_copy_only=False).copy()
    attended[(users == u) | (users == v)] = False
    violations = validation.validate_friend_labels(
        labels, world["users"], set_column(it, "attended", pa.array(attended))
    )
    assert row in flagged_rows(violations)
    assert set(violations.loc[violations["row"] == row, "rule"]) == {"positive_rule"}


# --------------------------------------------------------------------------- summaries


def test_summarize_and_describe_count_violations_per_rule(world):
    users = world["users"]
    broken = set_values(users, "home_neighborhood_id", [1, 2, 3], 99)
    broken = edit_vector(broken, "cat_pref", 4, lambda v: v * 3)
    violations = validation.validate_users(broken)
    summary = validation.summarize(violations)
    assert summary["violations"] == len(violations) == 4
    assert summary["by_rule"] == {"neighborhood_range": 3, "sums_to_one": 1}
    text = validation.describe(violations)
    assert "neighborhood_range (3 rows)" in text and "sums_to_one (1 rows)" in text


def test_display_names_are_optional_but_a_given_one_is_a_short_name(world):
    users = world["users"]
    assert validation.validate_users(users).empty
    assert validation.validate_users(users.drop_columns([contracts.DISPLAY_NAME])).empty  # no names at all
    assert validation.validate_users(edit_pylist(users, contracts.DISPLAY_NAME, 3, None)).empty  # one without
    broken = edit_pylist(edit_pylist(users, contracts.DISPLAY_NAME, 4, "  "), contracts.DISPLAY_NAME, 9, "x" * 65)
    violations = validation.validate_users(broken)
    assert set(violations["rule"]) == {"display_name_blank", "display_name_length"}
    assert flagged_rows(violations) == {4, 9}
    index = users.schema.get_field_index(contracts.DISPLAY_NAME)
    wrong_type = users.set_column(index, contracts.DISPLAY_NAME, pa.array(np.arange(users.num_rows)))
    reasons = set(validation.check_schema(wrong_type, "users")["reason"])
    assert "column display_name is int64, expected string" in reasons
    assert contracts.conform(users, "users").column_names[-1] == contracts.DISPLAY_NAME  # kept by the contract
