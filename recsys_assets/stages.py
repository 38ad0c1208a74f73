"""The pipeline's stages: which assets each group holds and the order a full run takes them in.

One constant for the jobs (`defs/automation.py`), `recsys materialize` (`materialize.py`) and
the tests. The asset definitions declare their group themselves; a test holds them to
`ASSET_GROUPS`, so adding an asset without a stage fails there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# How often the sensors that carry new data through (inbox -> ingest -> retrain -> indices ->
# publish, events -> metrics -> promote) look: each look is a cheap query of the instance, and on
# the loop's path every tick of delay is seconds between a user's visit and a model that knows it.
SENSOR_INTERVAL_S = 10
# A retrain's mode, as a run tag: `refresh` (started by new data: warm-started where it can be,
# `TrainingSettings.refresh_steps`) or absent (the nightly schedule, a launch from the UI: from scratch).
RETRAIN_MODE_TAG = "recsys/retrain"
REFRESH = "refresh"


def is_refresh(run_tags: Mapping[str, str]) -> bool:
    """Whether a run with these tags is a refresh retrain (see RETRAIN_MODE_TAG)."""
    return run_tags.get(RETRAIN_MODE_TAG) == REFRESH


VOCABULARY_ASSETS = ("vocabulary",)  # registers the city partitions: always first
WORLD_ASSETS = ("places", "users", "interactions", "user_user_edges", "friend_labels")  # per city
CITY_WORLD_ASSETS = WORLD_ASSETS[1:]  # a city's user-side tables (they read every city's places)
INGEST_ASSETS = CITY_WORLD_ASSETS[1:]  # an inbox file appends to interactions; the social tables follow
GRAPH_ASSETS = ("user_features", "place_features", "hetero_graph")
MODEL_ASSETS = ("trained_model", "model_evaluation")
EMBEDDING_ASSETS = ("user_embeddings", "place_embeddings")
INDEX_ASSETS = ("place_index", "user_index")
MANIFEST_ASSETS = ("serving_manifest", "batch_recommendations")  # batch lines come from the published manifest
RETRAIN_ASSETS = GRAPH_ASSETS + MODEL_ASSETS + EMBEDDING_ASSETS  # one run over all cities
# Partitioned by event day and materialized from the service's events by the `event_days` sensor:
# not a stage of a full run, which has no events to read.
FEEDBACK_ASSETS = ("online_metrics",)

ASSET_GROUPS: dict[str, tuple[str, ...]] = {
    "world": VOCABULARY_ASSETS + WORLD_ASSETS,
    "graph": GRAPH_ASSETS,
    "model": MODEL_ASSETS,
    "serving": EMBEDDING_ASSETS + INDEX_ASSETS + MANIFEST_ASSETS,
    "feedback": FEEDBACK_ASSETS,
}


@dataclass(frozen=True)
class Stage:
    """A step of a full run: one Dagster run per city when `per_city`, else one for all cities."""

    name: str
    assets: tuple[str, ...]
    per_city: bool


# The vocabulary first (it registers the city partitions the rest run for), then every city's places
# (travel events read them all), then each city's user-side tables,
# then the all-city assets, then each city's indices, and the manifest last: only a fully
# successful pipeline reaches it.
PIPELINE_STAGES: tuple[Stage, ...] = (
    Stage("vocabulary", VOCABULARY_ASSETS, per_city=False),
    Stage("places", ("places",), per_city=True),
    Stage("users and interactions", CITY_WORLD_ASSETS, per_city=True),
    Stage("all-city assets", RETRAIN_ASSETS, per_city=False),
    Stage("indices", INDEX_ASSETS, per_city=True),
    Stage("serving manifest", MANIFEST_ASSETS, per_city=False),
)
