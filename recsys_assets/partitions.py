"""One static partition per city, keyed by the city's slug ("london", ...)."""

from dagster import StaticPartitionsDefinition

from recsys_core.taxonomy import CITY_SLUGS, city_id_from_slug

city_partitions = StaticPartitionsDefinition(list(CITY_SLUGS))


def city_of(context) -> int:
    """The city id of the partition a step runs for."""
    return city_id_from_slug(context.partition_key)
