"""City partitions, registered from the world's vocabulary (one dynamic partition per city slug).

The `vocabulary` asset registers its cities when it is materialized, so a world of 1 city or of
40 gets its partitions without a code change. Partitions are only ever added: a city that leaves
the vocabulary keeps its materialized partitions (and the runs that made them).
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetCheckExecutionContext, AssetExecutionContext, DagsterInstance, DynamicPartitionsDefinition

from recsys_core.vocabulary import Vocabulary

CITY_PARTITIONS = "city"
city_partitions = DynamicPartitionsDefinition(name=CITY_PARTITIONS)


def register_cities(instance: DagsterInstance, vocabulary: Vocabulary) -> list[str]:
    """Add the vocabulary's cities that are not partitions yet; returns the ones added."""
    known = set(instance.get_dynamic_partitions(CITY_PARTITIONS))
    new = [slug for slug in vocabulary.city_slugs if slug not in known]
    if new:
        instance.add_dynamic_partitions(CITY_PARTITIONS, new)
    return new


def city_keys(instance: DagsterInstance) -> list[str]:
    """Every city partition registered in `instance`."""
    return list(instance.get_dynamic_partitions(CITY_PARTITIONS))


def unknown_cities(instance: DagsterInstance, cities: Sequence[str]) -> list[str]:
    known = set(city_keys(instance))
    return [c for c in cities if c not in known]


def city_of(context: AssetExecutionContext | AssetCheckExecutionContext, vocabulary: Vocabulary) -> int:
    """The city id of the partition a step runs for."""
    return vocabulary.city_id(context.partition_key)
