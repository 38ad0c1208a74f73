"""Node/edge features and the PyG HeteroData graph: dimensions, id <-> index mapping, aggregation, save/load."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from recsys_core import contracts, features
from recsys_core import graph as g

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def bundle(world) -> g.GraphBundle:
    return g.build_from_world(world)


def node_ids(bundle, node_type) -> np.ndarray:
    return bundle.data[node_type].node_id.numpy()


def edge_id_pairs(bundle, edge_type) -> set[tuple[int, int]]:
    """The edges of a type as (source id, destination id) pairs, via the node_id mapping."""
    src, _, dst = edge_type
    ei = bundle.data[edge_type].edge_index.numpy()
    return set(zip(node_ids(bundle, src)[ei[0]].tolist(), node_ids(bundle, dst)[ei[1]].tolist(), strict=True))


def events_table(rows: list[dict]) -> pa.Table:
    """A hand-made interactions table; missing fields get neutral defaults."""
    defaults = dict(
        dwell_time=0.0,
        num_likes=0,
        num_saves=0,
        num_shares=0,
        attended=False,
        implicit_rating=1.0,
        time_of_day_bucket=0,
        day_of_week_bucket=0,
        count=1,
    )
    full = [{**defaults, **r, "timestamp": np.datetime64(r["timestamp"], "us")} for r in rows]
    return pa.Table.from_pylist(full).select(contracts.INTERACTIONS.names).cast(contracts.INTERACTIONS)


# --------------------------------------------------------------------------- layouts and node features


def test_feature_layout_widths():
    assert features.USER_LAYOUT.width == 158  # spec's 148 with one area slot per neighbourhood (15, not 5)
    assert features.PLACE_LAYOUT.width == 114
    assert features.INTERACTION_EDGE_LAYOUT.width == 12
    assert features.SOCIAL_EDGE_LAYOUT.width == 3


def test_layout_blocks_are_contiguous_and_named():
    for layout in (features.USER_LAYOUT, features.PLACE_LAYOUT, features.INTERACTION_EDGE_LAYOUT):
        table = layout.as_table()
        assert table[0]["start"] == 0 and table[-1]["stop"] == layout.width
        assert all(a["stop"] == b["start"] for a, b in zip(table, table[1:], strict=False))
    with pytest.raises(KeyError):
        features.USER_LAYOUT["no_such_block"]


def test_user_features_carry_the_user_table_values(world):
    users = world["users"]
    x = features.user_features(users)
    L = features.USER_LAYOUT
    assert x.shape == (users.num_rows, 158) and x.dtype == np.float32
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x[:, L["city_id"]].ravel(), users.column("home_city_id").to_numpy())
    np.testing.assert_array_equal(
        x[:, L["home_neighborhood_id"]].ravel(), users.column("home_neighborhood_id").to_numpy()
    )
    for block in ("cat_pref", "fine_pref", "vibe_pref"):
        np.testing.assert_array_equal(x[:, L[block]], contracts.list_matrix(users, block))
    behaviour = x[:, L["behaviour"]]
    assert ((behaviour > 0) & (behaviour <= 1)).all()


def test_user_area_slots_hold_each_neighbourhood_weight(world):
    users = world["users"]
    area = features.user_features(users)[:, features.USER_LAYOUT["area_freqs"]]
    assert area.shape[1] == 15
    for row in (0, 123, 799):
        expected = np.zeros(15, np.float32)
        for neighbourhood, weight in users.column("area_freqs")[row].as_py():
            expected[neighbourhood] = weight
        np.testing.assert_allclose(area[row], expected)


def test_place_features_carry_the_place_table_values(world):
    places = world["places"]
    x = features.place_features(places)
    L = features.PLACE_LAYOUT
    assert x.shape == (places.num_rows, 114) and np.isfinite(x).all()
    np.testing.assert_array_equal(x[:, L["city_id"]].ravel(), places.column("city_id").to_numpy())
    np.testing.assert_array_equal(x[:, L["category_one_hot"]], contracts.list_matrix(places, "category_one_hot"))
    np.testing.assert_array_equal(x[:, L["fine_tag_vector"]], contracts.list_matrix(places, "fine_tag_vector"))
    np.testing.assert_array_equal(x[:, L["price_band"]].ravel(), places.column("price_band").to_numpy())
    popularity = x[:, L["popularity"]]
    assert ((popularity >= 0) & (popularity <= 1)).all()


def test_feature_tables_are_sorted_by_id(world):
    reversed_users = world["users"].take(np.arange(world["users"].num_rows)[::-1])
    table = features.user_feature_table(reversed_users)
    ids = table.column("user_id").to_numpy()
    assert (np.diff(ids) > 0).all()
    np.testing.assert_array_equal(
        contracts.list_matrix(table, "x"), features.user_features(world["users"].sort_by("user_id"))
    )


# --------------------------------------------------------------------------- aggregation of repeated events


def test_repeated_events_of_a_pair_become_one_edge_with_aggregated_features():
    events = events_table(
        [
            dict(
                user_id=1,
                place_id=7,
                timestamp="2024-01-01T09:00",
                dwell_time=100.0,
                num_likes=1,
                implicit_rating=2.0,
                time_of_day_bucket=0,
            ),
            dict(
                user_id=1,
                place_id=7,
                timestamp="2024-01-06T20:00",
                num_saves=1,
                attended=True,
                implicit_rating=4.0,
                time_of_day_bucket=2,
                day_of_week_bucket=1,
            ),
            dict(
                user_id=1,
                place_id=7,
                timestamp="2024-01-03T14:00",
                num_likes=2,
                num_shares=1,
                implicit_rating=3.0,
                time_of_day_bucket=1,
            ),
            dict(user_id=2, place_id=7, timestamp="2024-01-02T10:00", implicit_rating=1.0),
        ]
    )
    edges = features.aggregate_interactions(events, np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
    assert list(zip(edges.user_index, edges.place_index, strict=True)) == [(0, 0), (1, 0)]
    assert edges.count.tolist() == [3, 1]
    L = features.INTERACTION_EDGE_LAYOUT
    pair = edges.attr[0]
    assert edges.attr.shape == (2, 12)
    assert pair[L["rating"]][0] == pytest.approx(3.0 / 5)  # mean rating, scaled to [0, 1]
    assert pair[L["attended"]][0] == 1.0
    assert edges.attr[1, L["attended"]][0] == 0.0
    assert pair[L["likes"]][0] == pytest.approx(3 / 5)
    np.testing.assert_allclose(pair[L["time_of_day"]], [1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(pair[L["day_of_week"]], [2 / 3, 1 / 3])
    assert edges.last_time[0] == np.datetime64("2024-01-06T20:00", "us").astype(np.int64)


def test_more_activity_on_a_pair_never_lowers_its_count_features():
    one = events_table([dict(user_id=1, place_id=1, timestamp="2024-01-01T10:00", dwell_time=60.0, num_likes=1)])
    two = events_table([dict(user_id=1, place_id=1, timestamp="2024-01-01T10:00", dwell_time=60.0, num_likes=1)] * 2)
    L = features.INTERACTION_EDGE_LAYOUT
    a = features.aggregate_interactions(one, np.array([0]), np.array([0])).attr[0]
    b = features.aggregate_interactions(two, np.array([0, 0]), np.array([0, 0])).attr[0]
    assert b[L["dwell"]][0] > a[L["dwell"]][0]
    assert b[L["likes"]][0] > a[L["likes"]][0]


# --------------------------------------------------------------------------- the graph


def test_graph_has_node_features_of_the_documented_width(bundle, world):
    d = bundle.data
    assert d["user"].num_nodes == world["users"].num_rows
    assert d["place"].num_nodes == world["places"].num_rows
    assert tuple(d["user"].x.shape) == (world["users"].num_rows, 158)
    assert tuple(d["place"].x.shape) == (world["places"].num_rows, 114)
    assert d["user"].x.dtype == torch.float32


def test_graph_has_the_three_edge_types_with_their_feature_widths(bundle):
    d = bundle.data
    assert set(d.edge_types) == {
        ("user", "interacts", "place"),
        ("place", "rev_interacts", "user"),
        ("user", "social", "user"),
    }
    assert d[g.INTERACTS].edge_attr.shape[1] == 12
    assert d[g.REV_INTERACTS].edge_attr.shape[1] == 12
    assert d[g.SOCIAL].edge_attr.shape[1] == 3


def test_clean_graph_has_no_structural_problems(bundle):
    assert g.graph_problems(bundle) == []


def test_node_index_maps_to_sorted_ids(bundle, world):
    np.testing.assert_array_equal(node_ids(bundle, "user"), np.sort(world["users"].column("user_id").to_numpy()))
    np.testing.assert_array_equal(node_ids(bundle, "place"), np.sort(world["places"].column("place_id").to_numpy()))


def test_node_features_follow_the_node_index(bundle, world):
    users = world["users"]
    position = pd.Index(users.column("user_id").to_numpy())
    rows = position.get_indexer(node_ids(bundle, "user"))
    np.testing.assert_array_equal(bundle.data["user"].x.numpy(), features.user_features(users)[rows])


def test_interaction_edges_are_the_distinct_user_place_pairs(bundle, world):
    it = world["interactions"]
    pairs = set(zip(it.column("user_id").to_pylist(), it.column("place_id").to_pylist(), strict=True))
    assert edge_id_pairs(bundle, g.INTERACTS) == pairs
    assert bundle.data[g.INTERACTS].edge_index.shape[1] == len(pairs) < it.num_rows
    assert int(bundle.data[g.INTERACTS].edge_count.sum()) == it.num_rows


def test_interaction_edge_features_aggregate_that_pairs_events(bundle, world):
    it = world["interactions"].to_pandas()
    per_pair = it.groupby(["user_id", "place_id"]).agg(rating=("implicit_rating", "mean"), attended=("attended", "max"))
    store = bundle.data[g.INTERACTS]
    users = node_ids(bundle, "user")[store.edge_index[0].numpy()]
    places = node_ids(bundle, "place")[store.edge_index[1].numpy()]
    expected = per_pair.loc[list(zip(users, places, strict=True))]
    L = features.INTERACTION_EDGE_LAYOUT
    np.testing.assert_allclose(store.edge_attr[:, L["rating"]].numpy().ravel(), expected["rating"] / 5, atol=1e-5)
    np.testing.assert_array_equal(
        store.edge_attr[:, L["attended"]].numpy().ravel(), expected["attended"].astype(np.float32)
    )


def test_reverse_edges_mirror_the_interaction_edges(bundle):
    d = bundle.data
    assert torch.equal(d[g.REV_INTERACTS].edge_index, d[g.INTERACTS].edge_index.flip(0))
    assert torch.equal(d[g.REV_INTERACTS].edge_attr, d[g.INTERACTS].edge_attr)


def test_social_edges_run_both_ways_with_the_edge_table_features(bundle, world):
    edges = world["user_user_edges"]
    u, v = edges.column("user_u").to_pylist(), edges.column("user_v").to_pylist()
    assert edge_id_pairs(bundle, g.SOCIAL) == set(zip(u, v, strict=True)) | set(zip(v, u, strict=True))
    store = bundle.data[g.SOCIAL]
    assert store.edge_index.shape[1] == 2 * edges.num_rows
    ids = node_ids(bundle, "user")
    overlap = dict(zip(zip(u, v, strict=True), edges.column("interest_overlap_score").to_pylist(), strict=True))
    for (a, b), attr in zip(store.edge_index.t().numpy(), store.edge_attr.numpy(), strict=True):
        key = (min(ids[a], ids[b]), max(ids[a], ids[b]))
        assert attr[0] == pytest.approx(overlap[key])


def test_friend_labels_travel_beside_the_graph_as_node_indices(bundle, world):
    labels = world["friend_labels"]
    ids = node_ids(bundle, "user")
    np.testing.assert_array_equal(ids[bundle.friend_pairs[0].numpy()], labels.column("user_u").to_numpy())
    np.testing.assert_array_equal(ids[bundle.friend_pairs[1].numpy()], labels.column("user_v").to_numpy())
    np.testing.assert_array_equal(bundle.friend_compat.numpy(), labels.column("label_compat").to_numpy())
    assert ("user", "friend", "user") not in bundle.data.edge_types


def test_summary_reports_the_graph_dimensions(bundle, world):
    summary = bundle.summary()
    assert summary["user_feature_dim"] == 158 and summary["place_feature_dim"] == 114
    assert summary["interaction_edge_dim"] == 12 and summary["social_edge_dim"] == 3
    assert summary["social_edges_directed"] == 2 * world["user_user_edges"].num_rows
    assert summary["friend_labels"] == world["friend_labels"].num_rows


def test_interaction_with_an_unknown_place_is_refused(world):
    it = world["interactions"]
    place = it.column("place_id").to_numpy().copy()
    place[3] = 10**9
    broken = it.set_column(it.schema.get_field_index("place_id"), "place_id", pa.array(place, pa.int64()))
    with pytest.raises(g.UnknownIdError, match="1000000000"):
        g.build_from_world({**world, "interactions": broken})


def test_graph_problems_notices_nan_features_and_broken_reverse_edges(world):
    bundle = g.build_from_world(world)
    bundle.data["user"].x[5, 10] = float("nan")
    bundle.data[g.REV_INTERACTS].edge_index = bundle.data[g.INTERACTS].edge_index.clone()
    problems = g.graph_problems(bundle)
    assert any("user.x" in p for p in problems)
    assert any("rev_interacts" in p for p in problems)


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip_restores_every_tensor(bundle, tmp_path):
    g.save_graph(bundle, tmp_path)
    loaded = g.load_graph(tmp_path)
    for node_type in ("user", "place"):
        assert loaded.data[node_type].num_nodes == bundle.data[node_type].num_nodes
        assert torch.equal(loaded.data[node_type].x, bundle.data[node_type].x)
        assert torch.equal(loaded.data[node_type].node_id, bundle.data[node_type].node_id)
    assert set(loaded.data.edge_types) == set(bundle.data.edge_types)
    for edge_type in bundle.data.edge_types:
        for key, value in bundle.data[edge_type].items():
            assert torch.equal(loaded.data[edge_type][key], value), (edge_type, key)
    for key in ("friend_pairs", "friend_compat", "friend_attend"):
        assert torch.equal(getattr(loaded, key), getattr(bundle, key))
    assert g.graph_problems(loaded) == []


def test_saved_graph_loads_with_weights_only_as_plain_tensors(bundle, tmp_path):
    path = g.save_graph(bundle, tmp_path)
    tensors = torch.load(path, weights_only=True)
    assert isinstance(tensors, dict) and tensors
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())


def test_saved_id_maps_are_readable_tables(bundle, tmp_path):
    g.save_graph(bundle, tmp_path)
    users = pd.read_parquet(tmp_path / "user_index.parquet")
    np.testing.assert_array_equal(users["user_id"].to_numpy(), node_ids(bundle, "user"))
    np.testing.assert_array_equal(users["index"].to_numpy(), np.arange(len(users)))
    places = pd.read_parquet(tmp_path / "place_index.parquet")
    np.testing.assert_array_equal(places["place_id"].to_numpy(), node_ids(bundle, "place"))
