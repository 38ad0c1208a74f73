"""What a person sees in the Dagster UI: every asset grouped by stage with a description, kinds
and owners; materializations carrying counts, previews, the evaluation table, the training curve
and index sizes; checks carrying their figures, and the offending rows or ids when they fail."""

from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetKey

from recsys_assets.definitions import defs as project_defs
from recsys_assets.defs import checks
from recsys_assets.io_manager import load_latest
from recsys_assets.stages import ASSET_GROUPS, WORLD_ASSETS
from recsys_core import contracts
from recsys_core.retrieval.embeddings import city_rows
from recsys_core.retrieval.index import build_city_index
from recsys_core.taxonomy import CITY_SLUGS
from recsys_core.vocabulary import BUILTIN

STAGES = {group: set(assets) for group, assets in ASSET_GROUPS.items()}
WORLD_TABLES = set(WORLD_ASSETS)  # the world group less the vocabulary: the tables of the contract


def specs():
    return {spec.key.to_user_string(): spec for assets_def in project_defs.assets for spec in assets_def.specs}


def materialization(runs, asset: str):
    """The metadata of the (last) materialization of `asset` among `runs`."""
    events = [e for run in runs for e in run.get_asset_materialization_events() if e.asset_key == AssetKey(asset)]
    assert events, f"{asset} was not materialized"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def markdown_rows(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row, strict=False)) for row in cells[2:]]


# --------------------------------------------------------------------------- definitions


def test_assets_are_grouped_by_stage() -> None:
    by_group: dict[str, set[str]] = {}
    for key, spec in specs().items():
        by_group.setdefault(spec.group_name, set()).add(key)
    assert by_group == STAGES


def test_the_pipeline_stages_take_every_asset_once_and_per_city_stages_are_partitioned():
    from recsys_assets.stages import FEEDBACK_ASSETS, PIPELINE_STAGES

    staged = [asset for stage in PIPELINE_STAGES for asset in stage.assets]
    # the feedback assets run per event day from the events (the `event_days` sensor), never in a full run
    assert sorted(staged + list(FEEDBACK_ASSETS)) == sorted(specs()), "every asset is in exactly one stage"
    assert not set(staged) & set(FEEDBACK_ASSETS)
    for stage in PIPELINE_STAGES:
        partitioned = {specs()[asset].partitions_def is not None for asset in stage.assets}
        assert partitioned == {stage.per_city}, f"stage {stage.name!r}: per_city={stage.per_city}"


@pytest.mark.parametrize("asset", sorted(set().union(*STAGES.values())))
def test_every_asset_has_a_description_kinds_and_an_owner(asset):
    spec = specs()[asset]
    assert spec.description and len(spec.description) > 20
    assert spec.kinds and spec.kinds <= {"python", "parquet", "pytorch", "faiss", "json"}
    assert spec.owners and all(o.startswith("team:") for o in spec.owners)


def test_every_check_has_a_description():
    check_specs = [spec for assets_check in project_defs.asset_checks for spec in assets_check.check_specs]
    assert len(check_specs) == 15
    assert [s.name for s in check_specs if not s.description] == []


@pytest.mark.parametrize("asset", sorted(WORLD_TABLES))
def test_world_assets_show_the_contract_columns_before_any_run(asset):
    value = specs()[asset].metadata["dagster/column_schema"]
    schema = getattr(value, "schema", value)  # a TableSchema, or the metadata value wrapping one
    assert [(c.name, c.type) for c in schema.columns] == [(f.name, str(f.type)) for f in contracts.SCHEMAS[asset]]


# --------------------------------------------------------------------------- materialization metadata


@pytest.mark.parametrize("asset", sorted(WORLD_TABLES))
def test_world_tables_show_row_count_preview_and_artifact(materialized_world, asset):
    run = (materialized_world.places_runs if asset == "places" else materialized_world.city_runs)["berlin"]
    meta = materialization([run], asset)
    table = load_latest(materialized_world.instance, AssetKey(asset), ["berlin"])
    assert meta["dagster/row_count"] == table.num_rows > 0
    first = table.schema.names[0]
    assert [int(row[first]) for row in markdown_rows(meta["preview"])] == table.column(first).to_pylist()[:5]
    assert meta["path"].endswith(run.run_id) and meta["bytes"] > 0


def test_world_tables_show_distributions(materialized_world):
    users = materialization([materialized_world.city_runs["lisbon"]], "users")
    counts = markdown_rows(users["home_neighborhood_id distribution"])
    assert sum(int(row["rows"]) for row in counts) == users["dagster/row_count"]
    places = materialization([materialized_world.places_runs["lisbon"]], "places")
    [quantiles] = markdown_rows(places["base_popularity quantiles"])
    values = [float(quantiles[q]) for q in ("min", "q25", "median", "q75", "max")]
    assert values == sorted(values) and values[0] < values[-1]


def test_graph_assets_show_sizes_and_feature_layouts(materialized_world, world):
    run = [materialized_world.graph_run]
    users = materialization(run, "user_features")
    assert users["dagster/row_count"] == world["users"].num_rows
    layout = markdown_rows(users["layout"])
    assert sum(int(row["width"]) for row in layout) == 158
    graph = materialization(run, "hetero_graph")
    assert (graph["users"], graph["places"]) == (world["users"].num_rows, world["places"].num_rows)
    assert graph["interaction_edges"] > 0 and graph["social_edges_directed"] > 0


def test_trained_model_shows_its_training_curve_as_an_image(materialized_world):
    meta = materialization([materialized_world.model_run], "trained_model")
    match = re.fullmatch(r"!\[training curve\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", meta["training_curve"])
    assert match, meta["training_curve"][:80]
    png = base64.b64decode(match.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert 0 <= meta["best_val_recall@20"] <= 1
    assert meta["parameters"] > 0 and meta["val_pairs"] > 0 and meta["test_pairs"] > 0 and meta["steps"] > 0


def test_model_evaluation_shows_the_comparison_table(materialized_world):
    meta = materialization([materialized_world.model_run], "model_evaluation")
    for part in ("test comparison", "validation comparison"):
        models = {row["model"] for row in markdown_rows(meta[part]) if "tier" in row}
        assert {"graphrec", "two_tower", "popularity", "mf_bpr", "lightgcn", "item_item_filter", "oracle"} <= models
    assert "### Friends" in meta["test comparison"]
    assert 0 <= meta["test graphrec recall@20"] <= 1 and 0 <= meta["test oracle recall@20"] <= 1


def test_quality_gate_shows_its_figures_and_the_validation_table(materialized_world):
    [gate] = [
        e
        for e in materialized_world.model_run.get_asset_check_evaluations()
        if e.asset_check_key.name == "model_beats_baselines"
    ]
    assert {
        "val_recall@20_place_model",
        "val_recall@20_required",
        "val_people_recall@20",
        "validation comparison",
    } <= set(gate.metadata)
    assert "graphrec" in gate.metadata["validation comparison"].value


@pytest.mark.parametrize("asset,node", [("user_embeddings", "users"), ("place_embeddings", "places")])
def test_embeddings_show_rows_by_city(served_world, world, asset, node):
    meta = materialization(served_world.serving_runs, asset)
    assert meta["dagster/row_count"] == world[node].num_rows
    assert meta["dim"] > 0 and 0 < meta["norm"]["min"] <= meta["norm"]["max"]
    by_city = {row["city"]: int(row["rows"]) for row in markdown_rows(meta["rows by city"])}
    assert set(by_city) <= set(CITY_SLUGS) and sum(by_city.values()) == world[node].num_rows


@pytest.mark.parametrize("asset", ["place_index", "user_index"])
def test_indices_show_size_kind_and_bytes(served_world, asset):
    for slug in CITY_SLUGS:
        runs = [r for r in served_world.serving_runs if r.dagster_run.tags.get("dagster/partition") == slug]
        meta = materialization(runs, asset)
        assert meta["ntotal"] == meta["dagster/row_count"] and meta["city_id"] == CITY_SLUGS.index(slug)
        assert meta["kind"] in {"exact", "hnsw"} and meta["dim"] > 0
        assert meta["bytes"] >= meta["ntotal"] * meta["dim"] * 4  # float32 vectors at least


def test_manifest_shows_every_citys_index_sizes(served_world):
    manifest = materialization(served_world.serving_runs, "serving_manifest")
    rows = {row["city"]: row for row in markdown_rows(manifest["indices"])}
    assert set(rows) == set(CITY_SLUGS)
    for slug in CITY_SLUGS:
        runs = [r for r in served_world.serving_runs if r.dagster_run.tags.get("dagster/partition") == slug]
        for asset in ("place_index", "user_index"):
            index = materialization(runs, asset)
            assert int(rows[slug][f"{asset} rows"]) == index["ntotal"]
            assert int(rows[slug][f"{asset} bytes"]) == index["bytes"]


# --------------------------------------------------------------------------- failing checks name what is wrong


def _embeddings(ids: np.ndarray, city: int, dim: int = 4) -> pa.Table:
    vectors = np.random.default_rng(0).normal(size=(len(ids), dim)).astype(np.float32)
    return pa.table(
        {
            "place_id": pa.array(ids, pa.int64()),
            "city_id": pa.array(np.full(len(ids), city), pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )


def test_index_check_fails_naming_the_ids_the_index_lacks():
    city = 1
    table = _embeddings(np.arange(100, 130), city)
    rows = city_rows(table, city)
    index = build_city_index(
        rows.column("place_id").to_numpy()[:-3], np.asarray(rows.column("embedding").to_pylist(), np.float32)[:-3]
    )
    result = checks._index_check(
        SimpleNamespace(partition_key=CITY_SLUGS[city]), index, table, "place_id", sample=10, vocabulary=BUILTIN
    )
    assert not result.passed
    meta = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert sorted(meta["missing_ids"]) == [127, 128, 129]
    assert meta["rows"] == 27 and meta["city_rows"] == 30 and meta["problems"]


def test_index_check_passes_on_a_complete_index():
    table = _embeddings(np.arange(100, 130), 0)
    index = build_city_index(
        table.column("place_id").to_numpy(), np.asarray(table.column("embedding").to_pylist(), np.float32)
    )
    result = checks._index_check(
        SimpleNamespace(partition_key=CITY_SLUGS[0]), index, table, "place_id", sample=10, vocabulary=BUILTIN
    )
    assert result.passed
    assert result.metadata["recall@50_vs_exact"].value == 1.0


def test_feature_check_fails_naming_the_rows_with_nan():
    x = np.ones((5, 3), np.float32)
    x[2, 1] = np.nan
    table = pa.table({"user_id": pa.array([10, 11, 12, 13, 14], pa.int64()), "x": contracts.matrix_to_list_array(x)})
    result = checks._matrix_check(table, 3)
    assert not result.passed
    assert result.metadata["first_bad_ids"].value == [12] and result.metadata["rows_with_nan"].value == 1
