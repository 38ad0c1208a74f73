"""The world: its vocabulary (which registers the city partitions), then its tables, one partition
per city: users, places, interactions, social edges, labels."""

from pathlib import Path
from typing import Any

import pyarrow as pa
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, Output, asset

from recsys_assets.metadata import Metadata, column_schema, table_metadata
from recsys_assets.partitions import city_of, city_partitions, register_cities
from recsys_assets.resources import WorldSource
from recsys_core import contracts, inbox
from recsys_core.vocabulary import Vocabulary

WORLD: dict[str, Any] = dict(
    group_name="world", partitions_def=city_partitions, kinds={"python", "parquet"}, owners=["team:data"]
)
ALL_PLACES = AssetIn("places", partition_mapping=AllPartitionMapping())


@asset(
    group_name="world",
    kinds={"python", "json"},
    owners=["team:data"],
    description="The world's vocabulary: cities and their neighbourhoods, categories, tags, vibes, time slots "
    "and price bands. Materializing it registers one partition per city.",
)
def vocabulary(context: AssetExecutionContext, world: WorldSource) -> Output[Vocabulary]:
    words = world.vocabulary()
    added = register_cities(context.instance, words)
    if added:
        context.log.info("registered %d city partition(s): %s", len(added), ", ".join(added[:20]))
    return Output(
        words,
        metadata={
            "cities": words.n_cities,
            "city_partitions": MetadataValue.md(", ".join(words.city_slugs)),
            "neighbourhoods": sum(len(n) for n in words.neighborhoods),
            "categories": len(words.categories),
            "tags": len(words.tags),
            "vibes": len(words.vibes),
            "time_slots": len(words.time_slots),
            "price_bands": len(words.price_bands),
            "new_partitions": len(added),
        },
    )


def _columns(name: str) -> Metadata:
    """The contract's columns, shown on the asset's page before anything is materialized."""
    return {"dagster/column_schema": column_schema(contracts.SCHEMAS[name])}


@asset(
    **WORLD,
    metadata=_columns("users"),
    description="Users living in the city: tastes, vibes, frequented neighbourhoods, activity.",
)
def users(context: AssetExecutionContext, world: WorldSource, vocabulary: Vocabulary) -> Output[pa.Table]:
    table = world.users(city_of(context, vocabulary))
    return Output(table, metadata=table_metadata(table, ("home_neighborhood_id",)))


@asset(
    **WORLD,
    metadata=_columns("places"),
    description="Places in the city: categories, tags, price band, time slot, popularity.",
)
def places(context: AssetExecutionContext, world: WorldSource, vocabulary: Vocabulary) -> Output[pa.Table]:
    table = world.places(city_of(context, vocabulary))
    return Output(table, metadata=table_metadata(table, ("price_band", "typical_time_slot", "base_popularity")))


class InteractionsConfig(Config):
    """Set by the inbox sensor: append these accepted files, in order, to the city's latest interactions."""

    append_files: list[str] = []


@asset(
    **WORLD,
    metadata=_columns("interactions"),
    ins={"vocabulary": AssetIn(), "users": AssetIn(), "places": ALL_PLACES},
    description="Events of the city's users (by home city), including travel to places in other cities.",
)
def interactions(
    context: AssetExecutionContext,
    config: InteractionsConfig,
    world: WorldSource,
    vocabulary: Vocabulary,
    users: pa.Table,
    places: pa.Table,
) -> Output[pa.Table]:
    appended: Metadata = {}
    if not config.append_files:
        table = world.interactions(city_of(context, vocabulary), users, places)
    else:
        table, added = _with_new_events(context, [Path(f) for f in config.append_files], users, places)
        appended = {"appended_files": [Path(f).name for f in config.append_files], "appended_rows": added}
    return Output(
        table, metadata={**table_metadata(table, ("attended", "implicit_rating", "time_of_day_bucket")), **appended}
    )


def _with_new_events(
    context: AssetExecutionContext, paths: list[Path], users: pa.Table, places: pa.Table
) -> tuple[pa.Table, int]:
    """Latest interactions + the files' events (and how many); every file is validated again first, so
    an invalid one fails the run before anything is written (and none of the batch is applied)."""
    from recsys_assets.io_manager import load_latest_table

    table = existing = load_latest_table(context.instance, context.assets_def.key, [context.partition_key])
    user_ids, place_ids = users.column("user_id").to_numpy(), places.column("place_id").to_numpy()
    for path in paths:
        try:
            new = inbox.read_interactions_file(path, inbox.given_columns(existing))
        except ValueError as exc:
            raise Failure(description=f"{path.name} not appended (nor the rest of its batch): {exc}") from exc
        problems = inbox.problems_of(new, user_ids, place_ids)
        if problems:
            raise Failure(
                description=f"{path.name} not appended (nor the rest of its batch): " + "; ".join(problems[:10])
            )
        table = inbox.append(table, new)
    added = table.num_rows - existing.num_rows
    context.log.info("appending %d events from %d file(s) to %d existing", added, len(paths), existing.num_rows)
    return table, added


@asset(
    **WORLD,
    metadata=_columns("user_user_edges"),
    description="Soft social edges: each user's most similar neighbours in the city (user_u < user_v).",
)
def user_user_edges(
    context: AssetExecutionContext, world: WorldSource, vocabulary: Vocabulary, users: pa.Table, interactions: pa.Table
) -> Output[pa.Table]:
    table = world.user_user_edges(city_of(context, vocabulary), users, interactions)
    return Output(table, metadata=table_metadata(table, ("interest_overlap_score", "co_attendance_count")))


@asset(
    **WORLD,
    metadata=_columns("friend_labels"),
    description="Compatibility and attendance labels for user pairs (supervision of the friend head).",
)
def friend_labels(
    context: AssetExecutionContext,
    world: WorldSource,
    vocabulary: Vocabulary,
    users: pa.Table,
    interactions: pa.Table,
    user_user_edges: pa.Table,
) -> Output[pa.Table]:
    table = world.friend_labels(city_of(context, vocabulary), users, interactions, user_user_edges)
    return Output(table, metadata=table_metadata(table, ("label_compat", "label_attend")))
