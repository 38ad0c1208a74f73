"""Shared fixtures: one small synthetic world per session, and (lazily) that world run through Dagster.

The session world is v1 (the feature-driven world, `WorldConfig.v1`): the generator tests check
its rules and the model and serving tests run on it. World v2 has tests of its own
(`test_world_v2.py`), and the Dagster-materialized world is the default v2.

World tables are immutable pyarrow tables, so sharing them between tests is safe; tests that
corrupt a table build a modified copy.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from recsys_assets import stages
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world

SMALL_WORLD: dict[str, Any] = dict(n_users=800, n_places=800)


# Services and sensors the tests start log and read feedback events under a temporary directory,
# never the project's var/events; set at import, before any module reads it (tests that look at
# the events pass a directory of their own).
os.environ["RECSYS_EVENTS"] = tempfile.mkdtemp(prefix="recsys-test-events-")


@pytest.fixture(scope="session")
def world_config() -> WorldConfig:
    return WorldConfig.v1(**SMALL_WORLD)


@pytest.fixture(scope="session")
def world(world_config):
    """users, places, interactions, user_user_edges, friend_labels for all 8 cities."""
    return generate_world(world_config)


@pytest.fixture(scope="session")
def pipeline_world():
    """The tables `materialized_world` holds: the default world (v2) of the same size."""
    return generate_world(WorldConfig(**SMALL_WORLD))


@dataclass
class MaterializedWorld:
    """The small world materialized through Dagster: every asset, every city partition."""

    root: Path
    instance: object
    defs: object
    places_runs: dict = field(default_factory=dict)  # city slug -> ExecuteInProcessResult
    city_runs: dict = field(default_factory=dict)  # city slug -> ExecuteInProcessResult
    vocabulary_run: object = None
    graph_run: object = None
    model_run: object = None
    serving_runs: list = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        from recsys_core.manifest import live_manifest_path

        return live_manifest_path(self.root)

    @property
    def all_runs(self) -> list:
        return [self.vocabulary_run, *self.places_runs.values(), *self.city_runs.values(), self.graph_run]


CITY_ASSETS = list(stages.CITY_WORLD_ASSETS)
GRAPH_ASSETS = list(stages.GRAPH_ASSETS)
MODEL_ASSETS = list(stages.MODEL_ASSETS)
INDEX_ASSETS = list(stages.INDEX_ASSETS)
# A few steps and seconds: enough to exercise every stage, not to reach good quality.
SMALL_TRAINING: dict[str, Any] = dict(
    max_steps=60, eval_every=20, batch_size=2048, time_budget_s=600.0, baseline_budget_s=3.0
)  # step-bound: the same model on a busy machine


def materialize_selection(defs, instance, selection, partition_key=None, raise_on_error=True):
    """Materialize `selection` (asset names) with every asset and check of `defs` in scope."""
    from dagster import materialize

    return materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=defs.resources,
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="session")
def dagster_materialize():
    """`materialize_selection(defs, instance, selection, partition_key=None, raise_on_error=True)`."""
    return materialize_selection


@pytest.fixture(scope="session")
def materialized_world(tmp_path_factory) -> MaterializedWorld:
    """Places for every city first (interactions read every city's places for travel), then the
    per-city tables, then the unpartitioned features and graph, all in one ephemeral instance."""
    from dagster import DagsterInstance

    from recsys_assets.definitions import build_definitions
    from recsys_assets.resources import TrainingSettings, WorldSource
    from recsys_core.taxonomy import CITY_SLUGS

    root = tmp_path_factory.mktemp("artifacts")
    defs = build_definitions(str(root), WorldSource(**SMALL_WORLD), TrainingSettings(**SMALL_TRAINING))
    run = MaterializedWorld(root=root, instance=DagsterInstance.ephemeral(), defs=defs)
    run.vocabulary_run = materialize_selection(defs, run.instance, list(stages.VOCABULARY_ASSETS))
    for slug in CITY_SLUGS:
        run.places_runs[slug] = materialize_selection(defs, run.instance, ["places"], slug)
    for slug in CITY_SLUGS:
        run.city_runs[slug] = materialize_selection(defs, run.instance, CITY_ASSETS, slug)
    run.graph_run = materialize_selection(defs, run.instance, GRAPH_ASSETS)
    # The quality gate may fail on a 12-step model; that is reported, not raised.
    run.model_run = materialize_selection(defs, run.instance, MODEL_ASSETS, raise_on_error=False)
    return run


@pytest.fixture(scope="session")
def served_world(materialized_world) -> MaterializedWorld:
    """The materialized world plus embeddings, every city's indices and the live serving manifest."""
    from recsys_core.taxonomy import CITY_SLUGS

    run = materialized_world
    if not run.manifest_path.exists():
        run.serving_runs.append(materialize_selection(run.defs, run.instance, list(stages.EMBEDDING_ASSETS)))
        for slug in CITY_SLUGS:
            run.serving_runs.append(materialize_selection(run.defs, run.instance, INDEX_ASSETS, slug))
        run.serving_runs.append(materialize_selection(run.defs, run.instance, list(stages.MANIFEST_ASSETS)))
    return run


@pytest.fixture(scope="session")
def serving_artifacts(served_world):
    """The served world's artifacts loaded the way the service loads them."""
    from recsys_core.manifest import ServingManifest
    from recsys_core.recommend.artifacts import ServingArtifacts

    return ServingArtifacts.load(ServingManifest.read(served_world.manifest_path))


@pytest.fixture(scope="module")
def some_user(serving_artifacts) -> tuple[int, int]:
    """(user id, home city) of a user with history in the biggest city."""
    import numpy as np

    art = serving_artifacts
    city = int(np.bincount(art.user_city).argmax())
    user = int(np.flatnonzero(art.user_city == city)[0])
    return int(art.user_ids[user]), city


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """Small graphs run fastest on one thread, and far faster than two when the CPU is contended."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


pytest_plugins = ["tests.postgres_server"]  # the `postgres_dsn` fixture: a real PostgreSQL server
