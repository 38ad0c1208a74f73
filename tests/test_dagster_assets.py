"""The Dagster code location: definitions, a full materialization of a small world, immutable
artifacts, and blocking checks stopping a corrupted bring-your-own-Parquet world."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from dagster import AssetKey, DagsterInstance, Definitions, DynamicPartitionsDefinition

from recsys_assets.definitions import build_definitions
from recsys_assets.definitions import defs as project_defs
from recsys_assets.io_manager import latest_artifact_path, load_artifact, load_latest
from recsys_assets.resources import WorldSource
from recsys_core import contracts
from recsys_core.graph import build_from_world, graph_problems
from recsys_core.synthetic.config import ConfigError
from recsys_core.taxonomy import CITY_SLUGS

CITY_ASSETS = ["users", "interactions", "user_user_edges", "friend_labels"]
WORLD_ASSETS = ["users", "places", "interactions", "user_user_edges", "friend_labels"]
GRAPH_ASSETS = ["user_features", "place_features", "hetero_graph"]
WORLD_CHECKS = {
    "users_contract": "users",
    "places_contract": "places",
    "interactions_contract": "interactions",
    "user_user_edges_contract": "user_user_edges",
    "friend_labels_contract": "friend_labels",
}
GRAPH_CHECKS = {
    "user_features_finite": "user_features",
    "place_features_finite": "place_features",
    "hetero_graph_structure": "hetero_graph",
}
MODEL_CHECKS = {
    "trained_model_weights_finite": "trained_model",
    "model_beats_baselines": "model_evaluation",
    "model_not_worse_than_served": "model_evaluation",
}
SERVING_ASSETS = [
    "user_embeddings",
    "place_embeddings",
    "place_index",
    "user_index",
    "serving_manifest",
    "batch_recommendations",
]
SERVING_CHECKS = {
    "user_embeddings_complete": "user_embeddings",
    "place_embeddings_complete": "place_embeddings",
    "place_index_recall": "place_index",
    "user_index_recall": "user_index",
}


# --------------------------------------------------------------------------- helpers


def check_evaluations(result) -> list:
    return list(result.get_asset_check_evaluations())


def evaluation(result, check_name: str):
    matches = [e for e in check_evaluations(result) if e.asset_check_key.name == check_name]
    assert len(matches) == 1, [e.asset_check_key.name for e in check_evaluations(result)]
    return matches[0]


def materialized_assets(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def offending_rows(check_evaluation) -> list[dict[str, str]]:
    """The `offending_rows` markdown table of a failed check's metadata, as dicts of strings."""
    lines = [line for line in check_evaluation.metadata["offending_rows"].value.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = cells[0], cells[2:]  # cells[1] is the |---| separator
    return [dict(zip(header, row, strict=False)) for row in body]


def artifact_path(result, asset: str) -> Path:
    [event] = result.asset_materializations_for_node(asset)
    return Path(event.metadata["path"].value)


def city_rows(table: pa.Table, column: str, ids) -> pa.Table:
    return table.filter(pc.is_in(table.column(column), ids))


def city_slice(world, slug: str) -> dict[str, pa.Table]:
    city = CITY_SLUGS.index(slug)
    users = world["users"].filter(pc.equal(world["users"].column("home_city_id"), pa.scalar(city)))
    ids = users.column("user_id")
    return {
        "users": users,
        "places": world["places"].filter(pc.equal(world["places"].column("city_id"), pa.scalar(city))),
        "interactions": city_rows(world["interactions"], "user_id", ids),
        "user_user_edges": city_rows(world["user_user_edges"], "user_u", ids),
        "friend_labels": city_rows(world["friend_labels"], "user_u", ids),
    }


# --------------------------------------------------------------------------- definitions


def test_definitions_load():
    Definitions.validate_loadable(project_defs)
    keys = {key.to_user_string() for key in project_defs.resolve_all_asset_keys()}
    assert keys == set(
        ["vocabulary"]
        + WORLD_ASSETS
        + GRAPH_ASSETS
        + ["trained_model", "model_evaluation"]
        + SERVING_ASSETS
        + ["online_metrics"]
    )


@pytest.mark.parametrize("asset", WORLD_ASSETS)
def test_world_tables_have_one_partition_per_city_of_the_vocabulary(asset, materialized_world):
    partitions = project_defs.resolve_asset_graph().get(AssetKey(asset)).partitions_def
    assert isinstance(partitions, DynamicPartitionsDefinition)  # registered from the data, not the code
    keys = partitions.get_partition_keys(dynamic_partitions_store=materialized_world.instance)
    assert keys == list(CITY_SLUGS)
    assert len(keys) == 8


def test_the_vocabulary_is_unpartitioned_and_registers_the_cities(tmp_path):
    from recsys_assets.partitions import city_keys
    from recsys_core.vocabulary import Vocabulary

    world = tmp_path / "world"
    world.mkdir()
    Vocabulary(cities=("Oslo", "Lima", "Hanoi")).save(world)
    defs = build_definitions(str(tmp_path / "artifacts"), WorldSource(kind="parquet", directory=str(world)))
    assert project_defs.resolve_asset_graph().get(AssetKey("vocabulary")).partitions_def is None
    instance = DagsterInstance.ephemeral()
    from dagster import materialize

    assert materialize(list(defs.assets), selection=["vocabulary"], instance=instance, resources=defs.resources).success
    assert city_keys(instance) == ["oslo", "lima", "hanoi"]
    assert isinstance(load_latest(instance, AssetKey("vocabulary"), [None]), Vocabulary)


@pytest.mark.parametrize("asset", GRAPH_ASSETS)
def test_graph_assets_cover_all_cities_unpartitioned(asset):
    assert project_defs.resolve_asset_graph().get(AssetKey(asset)).partitions_def is None


def test_definitions_have_the_expected_blocking_checks():
    specs = [spec for checks in project_defs.asset_checks for spec in checks.check_specs]
    assert {spec.name: spec.asset_key.to_user_string() for spec in specs} == {
        **WORLD_CHECKS,
        **GRAPH_CHECKS,
        **MODEL_CHECKS,
        **SERVING_CHECKS,
    }
    assert all(spec.blocking for spec in specs)


def test_world_source_refuses_a_bad_size_with_a_config_error():
    with pytest.raises(ConfigError, match="n_users"):
        WorldSource(n_users=10, n_places=800).world_config()


# --------------------------------------------------------------------------- the whole small world


def test_every_materialization_run_succeeds(materialized_world):
    assert all(run.success for run in materialized_world.all_runs)


def test_every_asset_check_ran_for_every_partition_and_passed(materialized_world):
    evaluations = [e for run in materialized_world.all_runs for e in check_evaluations(run)]
    failed = [(e.asset_check_key.name, dict(e.metadata)) for e in evaluations if not e.passed]
    assert failed == []
    names = [e.asset_check_key.name for e in evaluations]
    assert {name: names.count(name) for name in set(names)} == {
        **{name: 8 for name in WORLD_CHECKS},
        **{name: 1 for name in GRAPH_CHECKS},
    }


@pytest.mark.parametrize("asset", WORLD_ASSETS)
def test_every_city_partition_is_materialized(materialized_world, asset):
    assert materialized_world.instance.get_materialized_partitions(AssetKey(asset)) == set(CITY_SLUGS)


@pytest.mark.parametrize("asset", WORLD_ASSETS)
def test_materialized_tables_are_the_generated_world(materialized_world, pipeline_world, asset):
    for slug in CITY_SLUGS:
        stored = load_latest(materialized_world.instance, AssetKey(asset), [slug])
        expected = contracts.SCHEMAS[asset]
        for name, type_ in contracts.OPTIONAL_COLUMNS.get(asset, {}).items():  # the world fills them (names)
            expected = expected.append(pa.field(name, type_))
        assert stored.schema.equals(expected)
        assert stored.equals(city_slice(pipeline_world, slug)[asset].combine_chunks()), slug


def test_materialized_graph_matches_the_graph_of_the_generated_world(materialized_world, pipeline_world):
    stored = load_latest(materialized_world.instance, AssetKey("hetero_graph"), [None])
    expected = build_from_world(pipeline_world)
    assert stored.summary() == expected.summary()
    assert graph_problems(stored) == []
    for node_type in ("user", "place"):
        assert torch.equal(stored.data[node_type].x, expected.data[node_type].x)
        assert torch.equal(stored.data[node_type].node_id, expected.data[node_type].node_id)


def test_artifacts_live_under_asset_partition_and_run(materialized_world):
    run = materialized_world.city_runs["berlin"]
    path = artifact_path(run, "users")
    assert path.relative_to(materialized_world.root).parts == ("users", "berlin", run.run_id)
    assert (path / "table.parquet").exists() and (path / "artifact.json").exists()
    graph_path = artifact_path(materialized_world.graph_run, "hetero_graph")
    assert graph_path.relative_to(materialized_world.root).parts == (
        "hetero_graph",
        "all",
        materialized_world.graph_run.run_id,
    )


def test_materialization_metadata_counts_rows(materialized_world, pipeline_world):
    [event] = materialized_world.city_runs["prague"].asset_materializations_for_node("interactions")
    assert event.metadata["dagster/row_count"].value == city_slice(pipeline_world, "prague")["interactions"].num_rows


# --------------------------------------------------------------------------- immutable artifacts


def test_materializing_twice_writes_two_run_directories_and_keeps_the_first(tmp_path, dagster_materialize):
    defs = build_definitions(str(tmp_path), WorldSource(n_users=800, n_places=800))
    instance = DagsterInstance.ephemeral()
    dagster_materialize(defs, instance, ["vocabulary"])  # registers the city partitions
    first = dagster_materialize(defs, instance, ["users"], "lisbon")
    second = dagster_materialize(defs, instance, ["users"], "lisbon")
    first_path, second_path = artifact_path(first, "users"), artifact_path(second, "users")
    assert first_path != second_path
    assert first_path.exists() and second_path.exists()
    assert load_artifact(first_path).equals(load_artifact(second_path))
    assert latest_artifact_path(instance, AssetKey("users"), "lisbon") == second_path


# --------------------------------------------------------------------------- corrupted bring-your-own Parquet world

BAD_USER_CITY, BAD_INTERACTION_CITY, CLEAN_CITY = "berlin", "barcelona", "prague"


@pytest.fixture(scope="module")
def corrupted_parquet_world(world, tmp_path_factory, dagster_materialize):
    """The small world as Parquet, with a NaN in one Berlin user's fine_pref and an unknown place
    in one Barcelona interaction; places materialized for every city from those files."""
    directory = tmp_path_factory.mktemp("byo_world")
    tables = dict(world)

    berlin_rows = np.flatnonzero(tables["users"].column("home_city_id").to_numpy() == CITY_SLUGS.index(BAD_USER_CITY))
    bad_user_local = 4
    bad_user_row = berlin_rows[bad_user_local]
    fine = contracts.list_matrix(tables["users"], "fine_pref")
    fine[bad_user_row, 7] = np.nan
    users = tables["users"]
    tables["users"] = users.set_column(
        users.schema.get_field_index("fine_pref"), users.schema.field("fine_pref"), contracts.matrix_to_list_array(fine)
    )

    barcelona_ids = city_slice(world, BAD_INTERACTION_CITY)["users"].column("user_id").to_numpy()
    interaction_rows = np.flatnonzero(np.isin(tables["interactions"].column("user_id").to_numpy(), barcelona_ids))
    bad_interaction_local = 10
    place = tables["interactions"].column("place_id").to_numpy().copy()
    unknown_place = int(place.max()) + 999
    place[interaction_rows[bad_interaction_local]] = unknown_place
    it = tables["interactions"]
    tables["interactions"] = it.set_column(
        it.schema.get_field_index("place_id"), "place_id", pa.array(place, pa.int64())
    )

    for name, table in tables.items():
        pq.write_table(table, directory / f"{name}.parquet")
    defs = build_definitions(str(directory / "artifacts"), WorldSource(kind="parquet", directory=str(directory)))
    instance = DagsterInstance.ephemeral()
    dagster_materialize(defs, instance, ["vocabulary"])
    for slug in CITY_SLUGS:
        dagster_materialize(defs, instance, ["places"], slug)

    def run_city(slug):
        return dagster_materialize(defs, instance, CITY_ASSETS, slug, raise_on_error=False)

    return dict(
        run_city=run_city,
        bad_user_id=int(users.column("user_id")[int(bad_user_row)].as_py()),
        bad_user_local_row=bad_user_local,
        bad_interaction_key=(
            int(it.column("user_id")[int(interaction_rows[bad_interaction_local])].as_py()),
            unknown_place,
        ),
        bad_interaction_local_row=bad_interaction_local,
    )


@pytest.fixture(scope="module")
def bad_user_run(corrupted_parquet_world):
    return corrupted_parquet_world["run_city"](BAD_USER_CITY)


def test_corrupted_user_fails_the_blocking_users_check(bad_user_run):
    assert not bad_user_run.success
    check = evaluation(bad_user_run, "users_contract")
    assert not check.passed
    assert check.metadata["violations"].value == 1


def test_failed_users_check_names_the_offending_row(bad_user_run, corrupted_parquet_world):
    [row] = offending_rows(evaluation(bad_user_run, "users_contract"))
    assert row["key"] == str(corrupted_parquet_world["bad_user_id"])
    assert int(row["row"]) == corrupted_parquet_world["bad_user_local_row"]  # row of the city's users table
    assert "fine_pref" in row["reason"]


def test_failed_users_check_stops_everything_downstream(bad_user_run):
    assert materialized_assets(bad_user_run) == {"users"}
    ran = {e.asset_check_key.name for e in check_evaluations(bad_user_run)}
    assert ran == {"users_contract"}


def test_corrupted_interaction_fails_its_check_and_stops_the_social_tables(corrupted_parquet_world):
    run = corrupted_parquet_world["run_city"](BAD_INTERACTION_CITY)
    assert not run.success
    assert evaluation(run, "users_contract").passed
    check = evaluation(run, "interactions_contract")
    assert not check.passed
    [row] = offending_rows(check)
    user, place = corrupted_parquet_world["bad_interaction_key"]
    assert str(user) in row["key"] and str(place) in row["key"]
    assert int(row["row"]) == corrupted_parquet_world["bad_interaction_local_row"]
    assert materialized_assets(run) == {"users", "interactions"}


def test_clean_city_of_the_same_parquet_world_materializes_fully(corrupted_parquet_world):
    run = corrupted_parquet_world["run_city"](CLEAN_CITY)
    assert run.success
    assert materialized_assets(run) == set(CITY_ASSETS)
    assert all(e.passed for e in check_evaluations(run))


# --------------------------------------------------------------------------- model stage


def test_model_stage_trains_evaluates_and_runs_its_checks(materialized_world):
    run = materialized_world.model_run
    assert {"trained_model", "model_evaluation"} <= materialized_assets(run)
    assert evaluation(run, "trained_model_weights_finite").passed
    gate = evaluation(run, "model_beats_baselines")
    # A 12-step model may or may not clear the gate; either way the figures it judged are recorded.
    # The default world's social edges are friendships: the gate judges the served people order.
    assert {"val_recall@20_place_model", "val_recall@20_required", "val_people_recall@20"} <= set(gate.metadata)
    versus = evaluation(run, "model_not_worse_than_served")  # the first model of the instance: nothing served yet
    assert versus.passed and "nothing is served yet" in versus.metadata["reason"].value


def test_model_evaluation_artifact_compares_every_model_on_both_parts(materialized_world):
    comparison = load_latest(materialized_world.instance, AssetKey("model_evaluation"), [None])
    models = set(comparison.places["model"])
    assert {
        "place_model",
        "graphrec",
        "two_tower",
        "popularity",
        "mf_bpr",
        "lightgcn",
        "item_item_filter",
        "ials",
        "oracle",
    } <= models
    assert set(comparison.places["part"]) == {"val", "test"}
    # The served place model blends the filter with others chosen on validation: never below the plain filter by much.
    assert comparison.place_metric("val", "place_model") >= 0.95 * comparison.place_metric("val", "item_item_filter")
    assert set(comparison.places["tier"]) == {"all", "zero", "cold", "warm", "hot", "new_places"}
    # The default world is split by time: its late joiners are measured with no training history.
    assert comparison.places.query("part == 'test' and tier == 'zero' and model == 'oracle'")["users"].item() > 0
    # The oracle knows the true preferences: on any world it beats popularity.
    assert comparison.place_metric("test", "oracle") > comparison.place_metric("test", "popularity")


def test_trained_model_artifact_loads_without_pickle(materialized_world):
    directory = latest_artifact_path(materialized_world.instance, AssetKey("trained_model"), None)
    state = torch.load(directory / "model.pt", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    trained = load_artifact(directory)
    assert trained.weights_are_finite()
    assert trained.place_model is not None and trained.place_model.served.non_finite_parts() == []
    assert len(trained.split.test_edges) > 0
