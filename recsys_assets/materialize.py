"""Materialize the whole asset graph city by city, recording runs in a Dagster instance.

Cities are separate runs (one partition each), in dependency order: the vocabulary (which
registers the city partitions), every city's places (travel events need them all), then each
city's users and interaction tables, then
the all-city assets (graph, model, evaluation, embeddings), then each city's indices, and
last the serving manifest, which only a fully successful pipeline reaches (`stages.PIPELINE_STAGES`).
This is what `make demo` and `recsys materialize` run; the Dagster UI shows the same runs.
"""

import logging
import time
from collections.abc import Sequence

from dagster import (
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    SourceAsset,
    materialize,
)

from recsys_assets.partitions import city_keys, unknown_cities
from recsys_assets.stages import PIPELINE_STAGES, Stage

logger = logging.getLogger(__name__)

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


def materializable(defs: Definitions) -> list[AssetsDefinition | AssetSpec | SourceAsset]:
    """Every asset and asset check of `defs`, as `materialize` takes them."""
    every_asset: list[AssetsDefinition | AssetSpec | SourceAsset] = []
    for definition in [*(defs.assets or ()), *(defs.asset_checks or ())]:
        if not isinstance(definition, AssetsDefinition | AssetSpec | SourceAsset):
            raise TypeError(f"cannot materialize {definition!r}")
        every_asset.append(definition)
    return every_asset


def _run(defs: Definitions, instance: DagsterInstance, stage: Stage, city: str | None) -> ExecuteInProcessResult:
    return materialize(
        materializable(defs),
        selection=AssetSelection.assets(*stage.assets),
        partition_key=city,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
        run_config=QUIET_RUN,
    )


def materialize_all(
    defs: Definitions, instance: DagsterInstance, cities: Sequence[str] | None = None
) -> dict[str, float]:
    """Every stage in order; per-city stages for `cities` (default: every city the vocabulary registers).
    Returns the seconds each step took ("stage" or "stage [city]")."""
    started = time.perf_counter()
    first, rest = PIPELINE_STAGES[0], PIPELINE_STAGES[1:]
    result = _run(defs, instance, first, None)
    seconds = {first.name: round(time.perf_counter() - started, 1)}
    if not result.success:
        raise MaterializationFailed(f"{first.name}: {_failure_reason(result)}")
    unknown = unknown_cities(instance, cities or [])
    if unknown:
        raise MaterializationFailed(f"unknown cities {unknown}; the vocabulary has {city_keys(instance)}")
    chosen = list(cities or city_keys(instance))
    steps = [(stage, city) for stage in rest for city in (chosen if stage.per_city else [None])]
    total = len(steps) + 1
    logger.info(
        "[1/%d] %s: ok (%.0fs elapsed; %d cities)", total, first.name, time.perf_counter() - started, len(chosen)
    )
    for i, (stage, city) in enumerate(steps, start=2):
        step_started = time.perf_counter()
        result = _run(defs, instance, stage, city)
        seconds[stage.name + (f" [{city}]" if city else "")] = round(time.perf_counter() - step_started, 1)
        elapsed = time.perf_counter() - started
        logger.info(
            "[%d/%d] %s%s: %s (%.0fs elapsed, ETA %.0fs)",
            i,
            total,
            stage.name,
            f" [{city}]" if city else "",
            "ok" if result.success else "FAILED",
            elapsed,
            elapsed / i * (total - i),
        )
        if not result.success:
            raise MaterializationFailed(f"{stage.name}{f' [{city}]' if city else ''}: {_failure_reason(result)}")
    return seconds
