"""Partial worlds: required columns, what completion fills in, what the checks hold, what history derives,
and the file sources that produce them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from recsys_core import contracts, features, inbox, validation
from recsys_core.completion import IncompleteWorldError, complete_interactions, complete_world
from recsys_core.evaluation.split import Split, training_graph
from recsys_core.graph import INTERACTS, build_from_world, graph_problems, load_graph, save_graph
from recsys_core.model.config import ModelConfig
from recsys_core.sources.base import SourceError
from recsys_core.sources.files import read_events, read_lightgcn, read_listens
from recsys_core.vocabulary import Vocabulary

VOCAB = Vocabulary.from_dict(
    {
        "cities": ["North", "South"],
        "neighborhoods": {"North": ["Docks", "Hill"]},
        "categories": ["food", "music"],
        "tags": [{"name": "ramen", "category": "food"}, {"name": "jazz", "category": "music"}, "outdoors"],
        "price_bands": ["low", "high"],
    }
)


def minimal_world() -> dict[str, pa.Table]:
    """Ids and cities; places with tags; who went where. Users 1-4 (1, 2 North; 3, 4 South)."""
    return {
        "users": pa.table(
            {"user_id": pa.array([1, 2, 3, 4], pa.int64()), "home_city_id": pa.array([0, 0, 1, 1], pa.int32())}
        ),
        "places": pa.table(
            {
                "place_id": pa.array([10, 11, 12, 13], pa.int64()),
                "city_id": pa.array([0, 0, 1, 1], pa.int32()),
                "neighborhood_id": pa.array([0, 1, -1, -1], pa.int32()),
                "fine_tag_vector": contracts.matrix_to_list_array(
                    np.array([[1, 0, 0], [0, 0.5, 0.5], [0, 1, 0], [0, 0, 1]], np.float32)
                ),
            }
        ),
        "interactions": pa.table(
            {
                "user_id": pa.array([1, 1, 2, 3, 4, 4], pa.int64()),
                "place_id": pa.array([10, 11, 11, 12, 13, 12], pa.int64()),
            }
        ),
    }


@pytest.fixture(scope="module")
def completed():
    return complete_world(minimal_world(), VOCAB)


def test_completion_gives_every_contract_column_and_records_the_filled_ones(completed):
    schemas = contracts.world_schemas(VOCAB)
    for name, table in completed.items():
        assert table.schema.names == schemas[name].names, name
        assert [f.type for f in table.schema] == [f.type for f in schemas[name]], name
    assert contracts.filled_columns(completed["users"]) >= {
        "cat_pref",
        "fine_pref",
        "area_freqs",
        "home_neighborhood_id",
    }
    assert "fine_tag_vector" not in contracts.filled_columns(completed["places"])  # given
    assert "neighborhood_id" not in contracts.filled_columns(completed["places"])
    assert {"price_band", "category_ids", "base_popularity"} <= contracts.filled_columns(completed["places"])
    assert {"timestamp", "count", "dwell_time", "implicit_rating"} <= contracts.filled_columns(
        completed["interactions"]
    )
    assert completed["places"].column("price_band").to_pylist() == [contracts.UNKNOWN] * 4
    assert completed["interactions"].column("count").to_pylist() == [1] * 6


def test_a_completed_world_passes_every_check(completed):
    users, places = completed["users"], completed["places"]
    ids = (users.column("user_id").to_numpy(), places.column("place_id").to_numpy())
    assert validation.validate_users(users, vocabulary=VOCAB).empty
    assert validation.validate_places(places, vocabulary=VOCAB).empty
    assert validation.validate_interactions(completed["interactions"], *ids).empty
    assert validation.validate_user_user_edges(completed["user_user_edges"], ids[0]).empty
    assert completed["friend_labels"].num_rows == 0  # no friendships, no labels


def test_missing_required_columns_and_tables_are_named():
    world = minimal_world()
    world["places"] = world["places"].drop_columns(["city_id"])
    del world["interactions"]
    with pytest.raises(
        IncompleteWorldError, match=r"places: missing required column\(s\) city_id; no interactions table"
    ):
        complete_world(world, VOCAB)


def test_given_columns_are_checked_and_name_the_row(completed):
    world = minimal_world()
    world["places"] = world["places"].append_column("price_band", pa.array([0, 1, 7, -1], pa.int32()))
    places = complete_world(world, VOCAB)["places"]
    violations = validation.validate_places(places, vocabulary=VOCAB)
    assert violations["rule"].tolist() == ["price_band_range"] and violations["key"].tolist() == ["12"]


def test_tastes_are_derived_from_history_in_the_graph(completed):
    bundle = build_from_world(completed, VOCAB)
    assert not graph_problems(bundle)
    assert bundle.derived == {"user": ("fine_pref", "area_freqs"), "place": ("popularity",)}
    layouts = features.FeatureLayouts.for_vocabulary(VOCAB)
    x = bundle.data["user"].x.numpy()
    # user 1 went to 10 (ramen) and 11 (jazz, outdoors): each tag's share of their visits' tags
    np.testing.assert_allclose(x[0, layouts.user["fine_pref"]], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(x[1, layouts.user["fine_pref"]], [0, 0.5, 0.5])
    # home-city neighbourhoods: user 1 in Docks and Hill, user 3's place has none known
    np.testing.assert_allclose(x[0, layouts.user["area_freqs"]], [0.5, 0.5])
    np.testing.assert_allclose(x[2, layouts.user["area_freqs"]], [0, 0])
    assert x[0, layouts.user["cat_pref"]].sum() == 0  # places gave no categories: nothing to derive


def test_a_measured_model_sees_tastes_from_its_training_edges_only(completed, tmp_path):
    bundle = build_from_world(completed, VOCAB)
    edges = bundle.data[INTERACTS].edge_index.numpy()
    held = int(np.flatnonzero((edges[0] == 0) & (edges[1] == 1))[0])  # user 1's visit to place 11
    rest = np.setdiff1d(np.arange(edges.shape[1]), [held])
    empty = np.zeros(0, np.int64)
    train = training_graph(bundle, Split(rest, np.array([held]), empty, empty, empty, empty))
    layouts = features.FeatureLayouts.for_vocabulary(VOCAB)
    np.testing.assert_allclose(train["user"].x.numpy()[0, layouts.user["fine_pref"]], [1, 0, 0])  # ramen only
    loaded = load_graph(save_graph(bundle, tmp_path).parent)
    assert loaded.derived == bundle.derived


def test_labels_are_derived_from_declared_friendships():
    world = minimal_world()
    world["user_user_edges"] = pa.table(
        {"user_u": pa.array([2, 3], pa.int64()), "user_v": pa.array([1, 4], pa.int64())}
    )
    done = complete_world(world, VOCAB)
    edges, labels = done["user_user_edges"], done["friend_labels"]
    assert edges.column("user_u").to_pylist() == [1, 3] and edges.column("user_v").to_pylist() == [2, 4]
    assert contracts.derived_columns(labels) == {"label_compat", "label_attend"}
    positive = labels.filter(pa.compute.equal(labels.column("label_compat"), 1))
    pairs = zip(positive.column("user_u").to_pylist(), positive.column("user_v").to_pylist(), strict=True)
    assert sorted(pairs) == [(1, 2), (3, 4)]
    # 1 and 2 share place 11, 3 and 4 share 12: both would come along
    assert positive.column("label_attend").to_pylist() == [1, 1]
    assert validation.validate_friend_labels(labels, done["users"], done["interactions"]).empty


def test_a_vocabulary_without_vibes_has_no_vibe_column_and_round_trips(completed, tmp_path):
    assert "vibe_pref" not in completed["users"].column_names
    pq.write_table(completed["users"], tmp_path / "users.parquet")
    back = pq.read_table(tmp_path / "users.parquet")
    assert contracts.filled_columns(back) == contracts.filled_columns(completed["users"])
    assert features.user_features(back, VOCAB).shape[1] == features.FeatureLayouts.for_vocabulary(VOCAB).user.width


@pytest.mark.parametrize(
    "stamps, expected",
    [
        (
            pa.array(["2026-03-01T08:30:00Z", "2026-03-07T20:00:00+00:00"]),
            ["2026-03-01T08:30:00", "2026-03-07T20:00:00"],
        ),
        (pa.array(["2026-03-01 08:30:00", "2026-03-07 20:00:00"]), ["2026-03-01T08:30:00", "2026-03-07T20:00:00"]),
        (pa.array([1772353800, 1772913600]), ["2026-03-01T08:30:00", "2026-03-07T20:00:00"]),
    ],
)
def test_timestamps_as_text_or_epoch_seconds_become_utc_with_their_buckets(stamps, expected):
    table = complete_interactions(pa.table({"user_id": [1, 1], "place_id": [2, 3], "timestamp": stamps}))
    assert [str(t.as_py().replace(tzinfo=None).isoformat()) for t in table.column("timestamp")] == expected
    assert table.column("time_of_day_bucket").to_pylist() == [0, 2]  # morning, evening
    assert table.column("day_of_week_bucket").to_pylist() == [1, 1]  # a Sunday and a Saturday


def test_events_file_brings_its_own_cities_and_categories(tmp_path):
    path = tmp_path / "events.csv"
    rows = pa.table(
        {
            "user_id": [1, 1, 1, 2, 3],
            "item_id": [7, 8, 9, 7, 9],
            "city": ["Rome", "Rome", "Oslo", "Rome", "Oslo"],
            "category": ["pizza", "pizza", "fjord", "pizza", "fjord"],
        }
    )
    pcsv.write_csv(rows, path)
    raw = read_events(path)
    assert raw.vocabulary.cities == ("Oslo", "Rome") and raw.vocabulary.categories == ("fjord", "pizza")
    users = raw.tables["users"].to_pydict()
    assert dict(zip(users["user_id"], users["home_city_id"], strict=True)) == {1: 1, 2: 1, 3: 0}  # most events
    world = complete_world(raw.tables, raw.vocabulary)
    assert world["places"].column("category_ids").to_pylist() == [[1], [1], [0]]
    assert validation.validate_places(world["places"], vocabulary=raw.vocabulary).empty
    assert ModelConfig.for_world(raw.vocabulary, 3, 3).featureless is False  # categories are content


@pytest.mark.parametrize(
    "table, message",
    [
        (
            pa.table({"user_id": ["a7", "2"], "item_id": [1, 2]}),
            r"user_id must be integer ids; these are not: row 0 \('a7'\)",
        ),
        (pa.table({"user_id": [1, 2]}), r"missing column\(s\) item_id"),
        (pa.table({"user_id": [1, -2], "item_id": [1, 2]}), "user_id has negative ids, e.g. row 1"),
    ],
)
def test_events_file_errors_name_the_problem(tmp_path, table, message):
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    with pytest.raises(SourceError, match=message):
        read_events(path)


def test_interaction_lists_are_one_city_worlds_of_the_ids_they_use():
    checkins = read_lightgcn("tests/data/gowalla_slice")
    assert checkins.vocabulary.cities == ("gowalla_slice",) and set(checkins.tables["interactions"].column_names) == {
        "user_id",
        "place_id",
    }
    listens = read_listens("tests/data/lastfm_slice")
    used = set(listens.tables["interactions"].column("user_id").to_pylist()) | set(
        listens.tables["user_user_edges"].column("user_u").to_pylist()
        + listens.tables["user_user_edges"].column("user_v").to_pylist()
    )
    assert set(listens.tables["users"].column("user_id").to_pylist()) == used  # not the dataset's 1,892
    assert min(listens.tables["interactions"].column("count").to_pylist()) >= 1
    assert ModelConfig.for_world(listens.vocabulary, 5, 5).featureless


def test_inbox_files_need_only_the_columns_the_world_was_given(completed, tmp_path):
    given = inbox.given_columns(completed["interactions"])
    assert given == {"user_id", "place_id"}
    path = tmp_path / "new.csv"
    pcsv.write_csv(pa.table({"user_id": [1, 2], "place_id": [12, 13]}), path)
    table = inbox.read_interactions_file(path, given)
    assert table.schema.names == contracts.INTERACTIONS.names and table.num_rows == 2
    with pytest.raises(ValueError, match=r"missing column\(s\) dwell_time"):
        inbox.read_interactions_file(path)  # a world whose events came with every column


def test_edges_given_with_their_features_are_checked_not_repaired(completed):
    """A friendship list is normalized; a contract edge table with a self pair and a repeat is not:
    the checks name those rows."""
    edges = pa.table(
        {
            "user_u": pa.array([1, 3, 1], pa.int64()),
            "user_v": pa.array([2, 3, 2], pa.int64()),
            "interest_overlap_score": pa.array([0.5, 0.5, 0.5], pa.float32()),
            "co_attendance_count": pa.array([0, 0, 0], pa.int32()),
            "same_neighborhood_freq": pa.array([0.0, 0.0, 0.0], pa.float32()),
        }
    )
    world = {**minimal_world(), "user_user_edges": edges, "friend_labels": contracts.FRIEND_LABELS.empty_table()}
    kept = complete_world(world, VOCAB)["user_user_edges"]
    assert kept.num_rows == 3
    violations = validation.validate_user_user_edges(kept, np.array([1, 2, 3, 4]))
    assert {"self_edge", "unique_pair"} <= set(violations["rule"])
