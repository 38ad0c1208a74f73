"""Feature matrices and the heterogeneous graph, covering all cities."""

from typing import Any

import pyarrow as pa
from dagster import AssetIn, MetadataValue, Output, asset

from recsys_assets.metadata import plain_metadata
from recsys_core import features
from recsys_core.graph import GraphBundle, build_hetero_graph

GRAPH: dict[str, Any] = dict(group_name="graph", owners=["team:ml"])
FEATURE_TABLE: dict[str, Any] = dict(**GRAPH, kinds={"python", "parquet"})


def _layout_md(layout: features.Layout) -> MetadataValue:
    rows = "\n".join(f"| {b['block']} | {b['start']}:{b['stop']} | {b['width']} |" for b in layout.as_table())
    return MetadataValue.md("| block | columns | width |\n|---|---|---|\n" + rows)


@asset(**FEATURE_TABLE, description="User node features (158 columns; layout in the metadata).")
def user_features(users: pa.Table) -> Output[pa.Table]:
    table = features.user_feature_table(users)
    return Output(table, metadata={"dagster/row_count": table.num_rows, "layout": _layout_md(features.USER_LAYOUT)})


@asset(
    **FEATURE_TABLE, ins={"places": AssetIn()}, description="Place node features (114 columns; layout in the metadata)."
)
def place_features(places: pa.Table) -> Output[pa.Table]:
    table = features.place_feature_table(places)
    return Output(table, metadata={"dagster/row_count": table.num_rows, "layout": _layout_md(features.PLACE_LAYOUT)})


@asset(
    **GRAPH,
    kinds={"pytorch"},
    description="PyG HeteroData: users, places; interacts / rev_interacts (12 edge features, one edge per "
    "user-place pair) and social (3 features, both directions); friend labels alongside.",
)
def hetero_graph(
    user_features: pa.Table,
    place_features: pa.Table,
    interactions: pa.Table,
    user_user_edges: pa.Table,
    friend_labels: pa.Table,
) -> Output[GraphBundle]:
    bundle = build_hetero_graph(user_features, place_features, interactions, user_user_edges, friend_labels)
    summary = bundle.summary()
    return Output(bundle, metadata={**plain_metadata(summary), "summary": MetadataValue.json(summary)})
