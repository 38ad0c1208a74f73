"""World tables, one partition per city: users, places, interactions, social edges, labels."""

from pathlib import Path
from typing import Any

import pyarrow as pa
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, Output, asset

from recsys_assets.metadata import Metadata, column_schema, table_metadata
from recsys_assets.partitions import city_of, city_partitions
from recsys_assets.resources import WorldSource
from recsys_core import contracts, inbox

WORLD: dict[str, Any] = dict(
    group_name="world", partitions_def=city_partitions, kinds={"python", "parquet"}, owners=["team:data"]
)
ALL_PLACES = AssetIn("places", partition_mapping=AllPartitionMapping())


def _columns(name: str) -> Metadata:
    """The contract's columns, shown on the asset's page before anything is materialized."""
    return {"dagster/column_schema": column_schema(contracts.SCHEMAS[name])}


@asset(
    **WORLD,
    metadata=_columns("users"),
    description="Users living in the city: tastes, vibes, frequented neighbourhoods, activity.",
)
def users(context: AssetExecutionContext, world: WorldSource) -> Output[pa.Table]:
    table = world.users(city_of(context))
    return Output(table, metadata=table_metadata(table, ("home_neighborhood_id",)))


@asset(
    **WORLD,
    metadata=_columns("places"),
    description="Places in the city: categories, tags, price band, time slot, popularity.",
)
def places(context: AssetExecutionContext, world: WorldSource) -> Output[pa.Table]:
    table = world.places(city_of(context))
    return Output(table, metadata=table_metadata(table, ("price_band", "typical_time_slot", "base_popularity")))


class InteractionsConfig(Config):
    """Set by the inbox sensor: append this accepted file to the city's latest interactions."""

    append_file: str = ""


@asset(
    **WORLD,
    metadata=_columns("interactions"),
    ins={"users": AssetIn(), "places": ALL_PLACES},
    description="Events of the city's users (by home city), including travel to places in other cities.",
)
def interactions(
    context: AssetExecutionContext, config: InteractionsConfig, world: WorldSource, users: pa.Table, places: pa.Table
) -> Output[pa.Table]:
    appended: Metadata = {}
    if not config.append_file:
        table = world.interactions(city_of(context), users, places)
    else:
        table, added = _with_new_events(context, Path(config.append_file), users, places)
        appended = {"appended_file": MetadataValue.path(config.append_file), "appended_rows": added}
    return Output(
        table, metadata={**table_metadata(table, ("attended", "implicit_rating", "time_of_day_bucket")), **appended}
    )


def _with_new_events(
    context: AssetExecutionContext, path: Path, users: pa.Table, places: pa.Table
) -> tuple[pa.Table, int]:
    """Latest interactions + the file's events (and how many); the file is validated again first, so
    an invalid one fails the run before anything is written."""
    from recsys_assets.io_manager import load_latest_table

    new = inbox.read_interactions_file(path)
    problems = inbox.problems_of(new, users.column("user_id").to_numpy(), places.column("place_id").to_numpy())
    if problems:
        raise Failure(description=f"{path.name} not appended: " + "; ".join(problems[:10]))
    existing = load_latest_table(context.instance, context.assets_def.key, [context.partition_key])
    context.log.info("appending %d events from %s to %d existing", new.num_rows, path.name, existing.num_rows)
    return inbox.append(existing, new), new.num_rows


@asset(
    **WORLD,
    metadata=_columns("user_user_edges"),
    description="Soft social edges: each user's most similar neighbours in the city (user_u < user_v).",
)
def user_user_edges(
    context: AssetExecutionContext, world: WorldSource, users: pa.Table, interactions: pa.Table
) -> Output[pa.Table]:
    table = world.user_user_edges(city_of(context), users, interactions)
    return Output(table, metadata=table_metadata(table, ("interest_overlap_score", "co_attendance_count")))


@asset(
    **WORLD,
    metadata=_columns("friend_labels"),
    description="Compatibility and attendance labels for user pairs (supervision of the friend head).",
)
def friend_labels(
    context: AssetExecutionContext,
    world: WorldSource,
    users: pa.Table,
    interactions: pa.Table,
    user_user_edges: pa.Table,
) -> Output[pa.Table]:
    table = world.friend_labels(city_of(context), users, interactions, user_user_edges)
    return Output(table, metadata=table_metadata(table, ("label_compat", "label_attend")))
