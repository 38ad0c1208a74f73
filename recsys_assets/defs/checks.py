"""Blocking asset checks: a table that breaks its contract does not flow downstream.

Each check is a thin wrapper around a `recsys_core.validation` validator; failures carry
the number of violations per rule and the offending rows as metadata.
"""

import datetime as dt
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetIn, MetadataValue, asset_check

from recsys_assets.defs import graph as graph_assets
from recsys_assets.defs import model as model_assets
from recsys_assets.defs import world as world_assets
from recsys_assets.io_manager import load_latest_table
from recsys_assets.metadata import plain_metadata, violations_metadata
from recsys_assets.partitions import city_keys, city_of, city_partitions
from recsys_assets.resources import FeedbackSettings, ServingSettings
from recsys_core import contracts, features, validation
from recsys_core.evaluation.compare import Comparison, quality_gate, summary_markdown
from recsys_core.feedback.store import shown_pairs
from recsys_core.graph import GraphBundle, graph_problems, load_graph
from recsys_core.ranking.blend import PlaceBlend
from recsys_core.ranking.served import served_agreement
from recsys_core.ranking.versus_served import ServedComparison, compare_with_served
from recsys_core.retrieval.embeddings import city_rows, embedding_matrix, embedding_problems, index_column
from recsys_core.retrieval.index import RECALL_TARGET, SERVED_TOP, CityIndex, recall_vs_exact
from recsys_core.training.pipeline import TrainedModel
from recsys_core.vocabulary import Vocabulary

# Partitioned asset checks are a preview feature in Dagster 1.13; we rely on them knowingly.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")

PARTITIONED: dict[str, Any] = dict(blocking=True, partitions_def=city_partitions)


def _result(violations) -> AssetCheckResult:
    return AssetCheckResult(passed=len(violations) == 0, metadata=violations_metadata(violations))


@asset_check(
    asset=world_assets.users,
    **PARTITIONED,
    additional_ins={"vocabulary": AssetIn()},
    description="Schema, unique ids, ranges, preference vectors sum to 1, city.",
)
def users_contract(context: AssetCheckExecutionContext, users: pa.Table, vocabulary: Vocabulary) -> AssetCheckResult:
    return _result(validation.validate_users(users, city_of(context, vocabulary), vocabulary))


@asset_check(
    asset=world_assets.places,
    **PARTITIONED,
    additional_ins={"vocabulary": AssetIn()},
    description="Schema, unique ids, ranges, categories consistent, tags sum to 1.",
)
def places_contract(context: AssetCheckExecutionContext, places: pa.Table, vocabulary: Vocabulary) -> AssetCheckResult:
    return _result(validation.validate_places(places, city_of(context, vocabulary), vocabulary))


@asset_check(
    asset=world_assets.interactions,
    **PARTITIONED,
    additional_ins={"users": AssetIn()},
    additional_deps=[world_assets.places],
    description="Schema, rating formula, time buckets, no future events, users of this city, places of any city.",
)
def interactions_contract(
    context: AssetCheckExecutionContext, interactions: pa.Table, users: pa.Table
) -> AssetCheckResult:
    # Travel events point at other cities' places, so every city's places are read here
    # (a partitioned check's inputs are limited to its own partition).
    all_places = load_latest_table(context.instance, world_assets.places.key, city_keys(context.instance))
    return _result(
        validation.validate_interactions(
            interactions,
            users.column("user_id").to_numpy(),
            all_places.column("place_id").to_numpy(),
            now=np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None)),
        )
    )


@asset_check(
    asset=world_assets.user_user_edges,
    **PARTITIONED,
    additional_ins={"users": AssetIn()},
    description="Schema, user_u < user_v, no self edges, unique pairs, users of this city, features in range.",
)
def user_user_edges_contract(user_user_edges: pa.Table, users: pa.Table) -> AssetCheckResult:
    return _result(validation.validate_user_user_edges(user_user_edges, users.column("user_id").to_numpy()))


@asset_check(
    asset=world_assets.friend_labels,
    **PARTITIONED,
    additional_ins={"users": AssetIn(), "interactions": AssetIn()},
    description="Schema, ordered unique pairs, and the label rules recomputed from overlap and co-attendance.",
)
def friend_labels_contract(friend_labels: pa.Table, users: pa.Table, interactions: pa.Table) -> AssetCheckResult:
    return _result(validation.validate_friend_labels(friend_labels, users, interactions))


def _matrix_check(table: pa.Table, width: int) -> AssetCheckResult:
    x = contracts.list_matrix(table, "x")
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    return AssetCheckResult(
        passed=x.shape[1] == width and len(bad_rows) == 0,
        metadata={
            "width": x.shape[1],
            "expected_width": width,
            "rows_with_nan": len(bad_rows),
            "first_bad_ids": table.column(0).to_numpy()[bad_rows[:20]].tolist(),
        },
    )


VOCABULARY_IN: dict[str, Any] = dict(additional_ins={"vocabulary": AssetIn()})


@asset_check(
    asset=graph_assets.user_features, blocking=True, **VOCABULARY_IN, description="The vocabulary's width, all finite."
)
def user_features_finite(user_features: pa.Table, vocabulary: Vocabulary) -> AssetCheckResult:
    return _matrix_check(user_features, features.FeatureLayouts.for_vocabulary(vocabulary).user.width)


@asset_check(
    asset=graph_assets.place_features, blocking=True, **VOCABULARY_IN, description="The vocabulary's width, all finite."
)
def place_features_finite(place_features: pa.Table, vocabulary: Vocabulary) -> AssetCheckResult:
    return _matrix_check(place_features, features.FeatureLayouts.for_vocabulary(vocabulary).place.width)


@asset_check(
    asset=graph_assets.hetero_graph,
    blocking=True,
    additional_ins={"user_features": AssetIn(), "place_features": AssetIn()},
    description="Feature and edge dimensions, no NaN, indices in range, reverse edges, "
    "every node of the world present.",
)
def hetero_graph_structure(
    hetero_graph: GraphBundle, user_features: pa.Table, place_features: pa.Table
) -> AssetCheckResult:
    problems = graph_problems(hetero_graph)
    data = hetero_graph.data
    for node, table, id_col in (("user", user_features, "user_id"), ("place", place_features, "place_id")):
        ids = np.sort(table.column(id_col).to_numpy())
        if not torch.equal(data[node].node_id, torch.from_numpy(ids)):
            problems.append(
                f"{node} nodes do not match the {node} feature table ({data[node].num_nodes} vs {len(ids)})"
            )
    return AssetCheckResult(
        passed=not problems, metadata={"problems": problems, **plain_metadata(hetero_graph.summary())}
    )


@asset_check(asset=model_assets.trained_model, blocking=True, description="Every weight is finite.")
def trained_model_weights_finite(trained_model: TrainedModel) -> AssetCheckResult:
    bad = [
        name
        for name, p in trained_model.model.state_dict().items()
        if p.is_floating_point() and not torch.isfinite(p).all()
    ]
    return AssetCheckResult(passed=not bad, metadata={"non_finite_tensors": bad})


@asset_check(
    asset=model_assets.model_evaluation,
    blocking=True,
    description="On validation: the place model's Recall@20 >= 1.05 x max(popularity, MF-BPR); people: on friendship "
    "data the served people model's Recall@20 of held-out friendships above common neighbours, Adamic-Adar and "
    "personalized PageRank, else GraphRec's friend ROC-AUC above common neighbours, Adamic-Adar and feature cosine.",
)
def model_beats_baselines(model_evaluation: Comparison) -> AssetCheckResult:
    passed, figures = quality_gate(model_evaluation)
    return AssetCheckResult(
        passed=passed,
        metadata={**figures, "validation comparison": MetadataValue.md(summary_markdown(model_evaluation, "val"))},
    )


@asset_check(
    asset=model_assets.model_evaluation,
    blocking=True,
    additional_ins={"trained_model": AssetIn(), "hetero_graph": AssetIn()},
    description="On test pairs the served version has not seen, with the pairs it has seen and the pairs a served "
    "version showed (impressions: their visits followed its ranking) excluded from both rankings: the new place "
    "model's Recall@20 is not below the live version's by more than 2 paired standard "
    "errors (passes with the reason when nothing is live or too few pairs compare).",
)
def model_not_worse_than_served(
    model_evaluation: Comparison,
    trained_model: TrainedModel,
    hetero_graph: GraphBundle,
    serving: ServingSettings,
    feedback: FeedbackSettings,
) -> AssetCheckResult:
    result = _versus_served(trained_model, hetero_graph, serving, feedback)
    return AssetCheckResult(passed=result.passed, metadata=plain_metadata(result.figures()))


def _versus_served(
    trained: TrainedModel, graph: GraphBundle, serving: ServingSettings, feedback: FeedbackSettings
) -> ServedComparison:
    live = serving.releases().read("live")
    if live is None:
        return ServedComparison(True, "nothing is served yet: the first version has no one to beat")
    if trained.place_model is None:
        return ServedComparison(True, "not compared: the new model has no place model")
    try:
        served = TrainedModel.load(live.model.directory)
        served_graph = load_graph(live.graph.directory)
    except (OSError, ValueError, RuntimeError) as exc:
        return ServedComparison(False, f"the served version {live.version} cannot be loaded to compare with: {exc}")
    if served.place_model is None:
        return ServedComparison(True, f"not compared: the served version {live.version} has no place model")
    return compare_with_served(
        graph,
        trained.split,
        trained.place_model.selected,
        served.place_model.served,
        served_graph,
        shown=shown_pairs(feedback.paths().store),
    )


def _embedding_check(
    table: pa.Table, id_column: str, graph: GraphBundle, node: str, model: TrainedModel
) -> AssetCheckResult:
    problems = embedding_problems(table, id_column, graph.data[node].node_id.numpy(), model.model.config.d_model)
    return AssetCheckResult(passed=not problems, metadata={"problems": problems, "rows": table.num_rows})


EMBEDDING_INS: dict[str, Any] = dict(
    blocking=True, additional_ins={"hetero_graph": AssetIn(), "trained_model": AssetIn()}
)


@asset_check(asset="user_embeddings", **EMBEDDING_INS, description="Model width, all finite, one row per graph user.")
def user_embeddings_complete(
    user_embeddings: pa.Table, hetero_graph: GraphBundle, trained_model: TrainedModel
) -> AssetCheckResult:
    return _embedding_check(user_embeddings, "user_id", hetero_graph, "user", trained_model)


@asset_check(asset="place_embeddings", **EMBEDDING_INS, description="Model width, all finite, one row per graph place.")
def place_embeddings_complete(
    place_embeddings: pa.Table, hetero_graph: GraphBundle, trained_model: TrainedModel
) -> AssetCheckResult:
    return _embedding_check(place_embeddings, "place_id", hetero_graph, "place", trained_model)


def _index_check(
    context: AssetCheckExecutionContext,
    index: CityIndex,
    embeddings: pa.Table,
    id_column: str,
    sample: int,
    vocabulary: Vocabulary,
) -> AssetCheckResult:
    city = city_of(context, vocabulary)
    rows = city_rows(embeddings, city)
    vectors = embedding_matrix(rows, index_column(rows))
    ids = rows.column(id_column).to_numpy()
    problems = []
    if len(index) != rows.num_rows:
        problems.append(f"index holds {len(index)} rows, the city has {rows.num_rows}")
    missing, extra = np.setdiff1d(ids, index.ids), np.setdiff1d(index.ids, ids)
    if len(missing) or len(extra) or len(np.unique(index.ids)) != len(index.ids):
        problems.append(
            f"id map differs from the city's embedding ids: {len(missing)} missing, {len(extra)} not of the city"
        )
    recall = float("nan")
    if len(vectors) and not problems:
        picked = np.random.default_rng(city).choice(len(vectors), min(sample, len(vectors)), replace=False)
        recall = recall_vs_exact(index, vectors, vectors[picked], k=50)
        if recall < RECALL_TARGET:
            problems.append(f"ANN recall@50 vs exact search {recall:.4f} < {RECALL_TARGET}")
    return _index_result(
        problems,
        index,
        rows.num_rows,
        {
            "recall@50_vs_exact": recall,
            "missing_ids": missing[:20].tolist(),
            "ids_not_of_the_city": extra[:20].tolist(),
        },
    )


def _index_result(problems: list[str], index: CityIndex, city_rows: int, figures: dict[str, Any]) -> AssetCheckResult:
    return AssetCheckResult(
        passed=not problems,
        metadata={"problems": problems, "kind": index.kind, "rows": len(index), "city_rows": city_rows, **figures},
    )


@asset_check(
    asset="place_index",
    **PARTITIONED,
    additional_ins={"place_embeddings": AssetIn(), "trained_model": AssetIn(), "vocabulary": AssetIn()},
    description="Size equals the city's place count; the served top 20 of 200 sampled users of the city holds "
    ">= 99 % of the place model's exact top 20 (GraphRec alone: ANN recall@50 vs exact >= 0.99).",
)
def place_index_recall(
    context: AssetCheckExecutionContext,
    place_index: CityIndex,
    place_embeddings: pa.Table,
    trained_model: TrainedModel,
    vocabulary: Vocabulary,
    serving: ServingSettings,
) -> AssetCheckResult:
    if trained_model.place_model is None:
        return _index_check(context, place_index, place_embeddings, "place_id", serving.ann_recall_sample, vocabulary)
    blend = trained_model.place_model.served
    return _place_model_index_check(context, place_index, place_embeddings, blend, vocabulary, serving)


def _place_model_index_check(
    context: AssetCheckExecutionContext,
    index: CityIndex,
    place_embeddings: pa.Table,
    blend: PlaceBlend,
    vocabulary: Vocabulary,
    serving: ServingSettings,
) -> AssetCheckResult:
    """What the service will answer: the served top 20 of a sample of the city's users against the
    place model's exact top 20 (other users than those the index chose its form by)."""
    city = city_of(context, vocabulary)
    rows = city_rows(place_embeddings, city)
    place_ids = place_embeddings.column("place_id").to_numpy()
    city_places = np.flatnonzero(place_embeddings.column("city_id").to_numpy() == city)
    problems = []
    if len(index) != rows.num_rows or not np.array_equal(np.sort(index.ids), np.sort(place_ids[city_places])):
        problems.append(f"index holds {len(index)} rows, not the city's {rows.num_rows} places")
    agreement = float("nan")
    if not problems and len(city_places):
        users = blend.sample_users(city_places, serving.ann_recall_sample, seed=1000 + city)
        agreement = served_agreement(blend, index, place_ids, city_places, users) if len(users) else 1.0
        if agreement < RECALL_TARGET:
            problems.append(f"served top {SERVED_TOP} vs the place model's exact top {SERVED_TOP}: {agreement:.4f}")
    return _index_result(problems, index, rows.num_rows, {f"served_top{SERVED_TOP}_vs_exact": agreement})


@asset_check(
    asset="user_index",
    **PARTITIONED,
    additional_ins={"user_embeddings": AssetIn(), "vocabulary": AssetIn()},
    description="Size equals the city's user count; ANN recall@50 vs exact search >= 0.99 on a sample.",
)
def user_index_recall(
    context: AssetCheckExecutionContext,
    user_index: CityIndex,
    user_embeddings: pa.Table,
    vocabulary: Vocabulary,
    serving: ServingSettings,
) -> AssetCheckResult:
    return _index_check(context, user_index, user_embeddings, "user_id", serving.ann_recall_sample, vocabulary)
