"""Materialize the whole asset graph city by city, recording runs in a Dagster instance.

Cities are separate runs (one partition each), in dependency order: every city's places
first (travel events need them all), then each city's users and interaction tables, then
the all-city assets (graph, model, evaluation, embeddings), then each city's indices, and
last the serving manifest, which only a fully successful pipeline reaches. This is what `make demo` and `recsys materialize` run; the Dagster UI
shows the same runs.
"""

import logging
import time
from collections.abc import Sequence

from dagster import AssetSelection, DagsterInstance, Definitions, materialize

from recsys_assets.defs import serving, world
from recsys_assets.partitions import city_partitions

logger = logging.getLogger(__name__)

PER_CITY_STAGES = (
    ("places", AssetSelection.assets(world.places)),
    ("users and interactions", AssetSelection.assets(world.users, world.interactions, world.user_user_edges, world.friend_labels)),
)


# Per-step DEBUG lines stay in the instance's event log (and the UI); the console shows progress.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class MaterializationFailed(RuntimeError):
    """A run failed (for example a blocking check); the message says which and why."""


def _failure_reason(result) -> str:
    failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
    if failed_checks:
        return "; ".join(f"check {e.asset_check_key.name} failed: {dict(e.metadata)}" for e in failed_checks)
    failures = [e for e in result.all_events if e.is_step_failure]
    return "; ".join(str(e.step_failure_data.error.message).strip() for e in failures) or "run failed"


def materialize_all(defs: Definitions, instance: DagsterInstance, cities: Sequence[str] | None = None) -> None:
    cities = list(cities or city_partitions.get_partition_keys())
    graph = defs.resolve_asset_graph()
    every_asset = list(defs.assets) + list(defs.asset_checks)
    steps = [(name, sel, city) for name, sel in PER_CITY_STAGES for city in cities]
    partitioned = AssetSelection.assets(*[k for k in graph.get_all_asset_keys() if graph.get(k).is_partitioned])
    manifest = AssetSelection.assets(serving.serving_manifest)
    steps.append(("all-city assets", AssetSelection.all() - partitioned - manifest, None))
    indices = AssetSelection.assets(serving.place_index, serving.user_index)
    steps += [("indices", indices, city) for city in cities]
    steps.append(("serving manifest", manifest, None))
    started = time.perf_counter()
    for i, (name, selection, city) in enumerate(steps, start=1):
        result = materialize(
            every_asset,
            selection=selection,
            partition_key=city,
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
            run_config=QUIET_RUN,
        )
        elapsed = time.perf_counter() - started
        logger.info(
            "[%d/%d] %s%s: %s (%.0fs elapsed, ETA %.0fs)",
            i, len(steps), name, f" [{city}]" if city else "", "ok" if result.success else "FAILED",
            elapsed, elapsed / i * (len(steps) - i),
        )
        if not result.success:
            raise MaterializationFailed(f"{name}{f' [{city}]' if city else ''}: {_failure_reason(result)}")
