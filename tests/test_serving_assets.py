"""The serving stage in Dagster: embeddings, per-city indices and their checks, and the manifest gate."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance

from recsys_assets.definitions import defs as project_defs
from recsys_core.manifest import ServingManifest
from recsys_core.retrieval.index import CityIndex
from recsys_core.taxonomy import CITY_SLUGS


@pytest.mark.parametrize("asset", ["place_index", "user_index"])
def test_indices_are_partitioned_by_city(asset, served_world):
    partitions = project_defs.resolve_asset_graph().get(AssetKey(asset)).partitions_def
    assert partitions.get_partition_keys(dynamic_partitions_store=served_world.instance) == list(CITY_SLUGS)


def test_serving_stage_materializes_with_every_check_passing(served_world):
    assert served_world.serving_runs and all(run.success for run in served_world.serving_runs)
    evaluations = [e for run in served_world.serving_runs for e in run.get_asset_check_evaluations()]
    names = {e.asset_check_key.name for e in evaluations}
    assert {"user_embeddings_complete", "place_embeddings_complete", "place_index_recall", "user_index_recall"} <= names
    assert all(e.passed for e in evaluations)
    recalls = [
        e.metadata["recall@50_vs_exact"].value for e in evaluations if e.asset_check_key.name == "user_index_recall"
    ]
    # place indices hold the place model's vectors: what counts is the served top 20 against the exact one
    served = [
        e.metadata["served_top20_vs_exact"].value for e in evaluations if e.asset_check_key.name == "place_index_recall"
    ]
    assert len(recalls) == len(served) == len(CITY_SLUGS) and min(recalls + served) >= 0.99


def test_manifest_names_every_city_index_with_the_city_row_counts(served_world, serving_artifacts):
    manifest = ServingManifest.read(served_world.manifest_path)
    manifest.verify()
    assert sorted(manifest.place_indices) == sorted(manifest.user_indices) == [str(i) for i in range(len(CITY_SLUGS))]
    for city, ref in manifest.place_indices.items():
        index = CityIndex.load(ref.directory)
        assert len(index) == int((serving_artifacts.place_city == int(city)).sum())
        assert np.isin(index.ids, serving_artifacts.place_ids[serving_artifacts.place_city == int(city)]).all()
    assert manifest.place_model is not None and manifest.place_model.directory.is_relative_to(manifest.model.directory)
    assert manifest.model_version == f"graphrec-{manifest.model.sha256[:12]}-blend-{manifest.place_model.sha256[:8]}"


def test_a_candidate_release_policy_publishes_beside_live_for_an_experiment(
    served_world, dagster_materialize, tmp_path
):
    """Publishing as candidate: the first manifest of a serving directory goes live (nothing to compare
    it with); the next is the candidate of a new experiment with the policy's share, and live stays."""
    from recsys_assets.definitions import build_definitions
    from recsys_assets.resources import ReleasePolicy
    from recsys_core.feedback.experiment import read_experiment
    from recsys_core.feedback.releases import ServingDirectory

    world, training = served_world.defs.resources["world"], served_world.defs.resources["training"]
    defs = build_definitions(str(tmp_path), world, training, release=ReleasePolicy("candidate", 0.3))
    releases = ServingDirectory(tmp_path / "serving")

    def publish() -> str:
        run = dagster_materialize(defs, served_world.instance, ["serving_manifest"])
        return run.asset_materializations_for_node("serving_manifest")[0].metadata["published_as"].value

    assert publish() == "live" and releases.read("candidate") is None
    first = releases.read("live")
    assert publish() == "candidate"
    experiment = read_experiment(releases.experiment)
    candidate = releases.read("candidate")
    assert releases.read("live").version == first.version != candidate.version
    assert experiment.enabled and experiment.candidate_share == 0.3
    assert (experiment.live_version, experiment.candidate_version) == (first.version, candidate.version)


def test_manifest_is_not_published_when_upstream_checks_never_passed(served_world, tmp_path):
    """A fresh instance knows the artifacts' paths but has no passing check on record: no manifest."""
    from recsys_assets.definitions import build_definitions
    from recsys_assets.resources import ServingSettings

    defs = build_definitions(str(served_world.root), serving_settings=ServingSettings(artifact_root=str(tmp_path)))
    from dagster import materialize

    instance = DagsterInstance.ephemeral()
    result = materialize(
        [*defs.assets, *defs.asset_checks],
        selection=["serving_manifest"],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(
        failure.step_failure_data.error.cause.message
        if failure.step_failure_data.error.cause
        else failure.step_failure_data.error.message
    )
    assert "not publishing a serving manifest" in message and "never ran" in message
    assert not (tmp_path / "serving" / "manifest.json").exists()


def test_home_city_score_stats_equal_scoring_every_place(serving_artifacts):
    """The attendance term's per-user mean and std of <z_u, z_p> over the home city, in closed form."""
    art = serving_artifacts
    city = int(np.bincount(art.user_city).argmax())
    users, places = np.flatnonzero(art.user_city == city), np.flatnonzero(art.place_city == city)
    scores = art.z_user_np[users].astype(np.float64) @ art.z_place_np[places].T.astype(np.float64)
    np.testing.assert_allclose(art.score_mean[users], scores.mean(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(art.score_std[users], np.maximum(scores.std(1, ddof=1), 1e-6), rtol=1e-3, atol=1e-4)
