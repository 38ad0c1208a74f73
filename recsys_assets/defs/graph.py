"""Feature matrices and the heterogeneous graph, covering all cities."""

from typing import Any

import pyarrow as pa
from dagster import AssetIn, MetadataValue, Output, asset

from recsys_assets.metadata import plain_metadata
from recsys_core import features
from recsys_core.graph import GraphBundle, build_hetero_graph
from recsys_core.vocabulary import Vocabulary

GRAPH: dict[str, Any] = dict(group_name="graph", owners=["team:ml"])
FEATURE_TABLE: dict[str, Any] = dict(**GRAPH, kinds={"python", "parquet"})


def _layout_md(layout: features.Layout) -> MetadataValue:
    rows = "\n".join(f"| {b['block']} | {b['start']}:{b['stop']} | {b['width']} |" for b in layout.as_table())
    return MetadataValue.md("| block | columns | width |\n|---|---|---|\n" + rows)


def _feature_output(table: pa.Table, layout: features.Layout) -> Output[pa.Table]:
    """The feature table with its row count, layout and the blocks the graph derives from history."""
    derived = ", ".join(features.blocks_to_derive(table)) or "none"
    return Output(
        table,
        metadata={"dagster/row_count": table.num_rows, "layout": _layout_md(layout), "derived_from_history": derived},
    )


@asset(
    **FEATURE_TABLE,
    ins={"users": AssetIn(), "places": AssetIn(), "vocabulary": AssetIn()},
    description="User node features (widths follow the vocabulary; layout in the metadata). Tastes the source "
    "did not give are derived from history in the graph.",
)
def user_features(users: pa.Table, places: pa.Table, vocabulary: Vocabulary) -> Output[pa.Table]:
    table = features.user_feature_table(users, vocabulary, places)
    return _feature_output(table, features.FeatureLayouts.for_vocabulary(vocabulary).user)


@asset(
    **FEATURE_TABLE,
    ins={"places": AssetIn(), "vocabulary": AssetIn()},
    description="Place node features (widths follow the vocabulary; layout in the metadata).",
)
def place_features(places: pa.Table, vocabulary: Vocabulary) -> Output[pa.Table]:
    table = features.place_feature_table(places)
    return _feature_output(table, features.FeatureLayouts.for_vocabulary(vocabulary).place)


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
    vocabulary: Vocabulary,
) -> Output[GraphBundle]:
    bundle = build_hetero_graph(user_features, place_features, interactions, user_user_edges, friend_labels, vocabulary)
    summary = bundle.summary()
    return Output(bundle, metadata={**plain_metadata(summary), "summary": MetadataValue.json(summary)})
