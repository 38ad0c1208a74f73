"""Serving artifacts: embeddings, per-city ANN indices and the manifest the service follows.

The manifest is the last asset: it only materializes when every upstream check passed,
and it is published by an atomic rename, so the service never sees a half-built state.
"""

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AllPartitionMapping,
    AssetCheckKey,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from recsys_assets.io_manager import MANIFEST, latest_artifact_path, latest_materialization, load_latest
from recsys_assets.metadata import Metadata, markdown_table, rows_by_city
from recsys_assets.partitions import city_of, city_partitions
from recsys_assets.resources import ServingSettings, WorldSource
from recsys_core.graph import GraphBundle
from recsys_core.manifest import ArtifactRef, ServingManifest
from recsys_core.ranking.blend import ARRAYS_FILE
from recsys_core.ranking.people import PEOPLE_FILE
from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.batch import batch_places
from recsys_core.retrieval.embeddings import city_rows, embedding_matrix, export_embeddings, index_column
from recsys_core.retrieval.index import CityIndex, build_city_index
from recsys_core.training.pipeline import SERVED_PEOPLE_MODEL, SERVED_PLACE_MODEL, TrainedModel
from recsys_core.vocabulary import Vocabulary

SERVING: dict[str, Any] = dict(group_name="serving", owners=["team:ml"])


@multi_asset(
    outs={
        "user_embeddings": AssetOut(
            **SERVING,
            kinds={"pytorch", "parquet"},
            description="user_id, city_id, float32 embedding, influential past places and friends, display name.",
        ),
        "place_embeddings": AssetOut(
            **SERVING, kinds={"pytorch", "parquet"}, description="place_id, city_id, float32 embedding."
        ),
    },
)
def embeddings(trained_model: TrainedModel, hetero_graph: GraphBundle):
    """One full-graph pass of the trained encoders + backbone (held-out pairs included); places also
    carry the served place model's item vectors, which their indices hold."""
    place_model = trained_model.place_model
    retrieval = place_model.served.item_vectors() if place_model is not None else None
    tables = export_embeddings(trained_model.model, hetero_graph, retrieval)
    for name, table in (("user_embeddings", tables.users), ("place_embeddings", tables.places)):
        yield Output(table, output_name=name, metadata=_embedding_metadata(table, hetero_graph.vocabulary))


def _embedding_metadata(table: pa.Table, vocabulary: Vocabulary) -> Metadata:
    vectors = embedding_matrix(table)
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(1)
    return {
        "dagster/row_count": table.num_rows,
        "dim": table.schema.field("embedding").type.list_size,
        "index dim": table.schema.field(index_column(table)).type.list_size,
        "rows by city": rows_by_city(table.column("city_id").to_numpy(), vocabulary),
        "norm": MetadataValue.json(
            {"min": float(norms.min()), "median": float(np.median(norms)), "max": float(norms.max())}
        ),
    }


def _city_index(
    context: AssetExecutionContext,
    table: pa.Table,
    id_column: str,
    settings: ServingSettings,
    vocabulary: Vocabulary,
    queries: np.ndarray | None = None,
) -> Output[CityIndex]:
    city = city_of(context, vocabulary)
    rows = city_rows(table, city)
    vectors = embedding_matrix(rows, index_column(rows))
    index = build_city_index(rows.column(id_column).to_numpy(), vectors, settings.exact_max_rows, queries)
    return Output(
        index,
        metadata={
            "dagster/row_count": len(index),
            "ntotal": len(index),
            "dim": int(vectors.shape[1]),
            "kind": index.kind,
            "city_id": city,
        },
    )


@asset(
    **SERVING,
    kinds={"faiss"},
    partitions_def=city_partitions,
    description="FAISS inner-product index of the city's places: the place model's item vectors.",
)
def place_index(
    context: AssetExecutionContext,
    place_embeddings: pa.Table,
    trained_model: TrainedModel,
    vocabulary: Vocabulary,
    serving: ServingSettings,
) -> Output[CityIndex]:
    queries = place_model_queries(trained_model, place_embeddings, city_of(context, vocabulary), serving)
    return _city_index(context, place_embeddings, "place_id", serving, vocabulary, queries)


def place_model_queries(
    trained: TrainedModel, place_embeddings: pa.Table, city: int, serving: ServingSettings
) -> np.ndarray | None:
    """The served place model's queries of a sample of the city's users (None: GraphRec alone, whose
    index is asked with embeddings like its rows)."""
    if trained.place_model is None:
        return None
    in_city = np.flatnonzero(place_embeddings.column("city_id").to_numpy() == city)
    return trained.place_model.served.sample_queries(in_city, serving.ann_recall_sample, seed=city)


@asset(
    **SERVING,
    kinds={"faiss"},
    partitions_def=city_partitions,
    description="FAISS inner-product index of the city's users.",
)
def user_index(
    context: AssetExecutionContext, user_embeddings: pa.Table, vocabulary: Vocabulary, serving: ServingSettings
) -> Output[CityIndex]:
    return _city_index(context, user_embeddings, "user_id", serving, vocabulary)


def _ref(context: AssetExecutionContext, key, partition: str | None = None) -> ArtifactRef:
    directory = latest_artifact_path(context.instance, key, partition)
    stored = json.loads((directory / MANIFEST).read_text())
    return ArtifactRef(
        path=str(directory.resolve()), file=stored["file"], sha256=stored["sha256"], bytes=stored.get("bytes")
    )


def _key(name: str) -> AssetKey:
    return AssetKey(name)


def _index_sizes(context: AssetExecutionContext, vocabulary: Vocabulary) -> MetadataValue:
    """Per city: the rows, kind and file size of the place and user indices the manifest names."""
    rows = []
    for slug in vocabulary.city_slugs:
        row: dict[str, object] = {"city": slug}
        for name in ("place_index", "user_index"):
            record = latest_materialization(context.instance, _key(name), slug)
            meta = _plain(record.asset_materialization.metadata) if record else {}
            row[f"{name} rows"] = meta.get("ntotal", meta.get("rows"))
            row[f"{name} kind"] = meta.get("kind")
            row[f"{name} bytes"] = meta.get("bytes")
        rows.append(row)
    return markdown_table(pd.DataFrame(rows))


# Checks of earlier runs that must have passed on the artifacts a manifest names
# (checks in the same run block by themselves).
GATES = (
    ("hetero_graph", "hetero_graph_structure"),
    ("trained_model", "trained_model_weights_finite"),
    ("model_evaluation", "model_beats_baselines"),
    ("model_evaluation", "model_not_worse_than_served"),
    ("user_embeddings", "user_embeddings_complete"),
    ("place_embeddings", "place_embeddings_complete"),
)


class UncheckedArtifact(RuntimeError):
    """An upstream artifact whose latest check did not pass: it must not be served."""


def _plain(metadata) -> dict[str, object]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _require_passed_checks(context: AssetExecutionContext) -> None:
    failed = []
    for asset_name, check_name in GATES:
        record = context.instance.get_latest_asset_check_evaluation_record(AssetCheckKey(_key(asset_name), check_name))
        evaluation = record.evaluation if record else None
        if evaluation is None or not evaluation.passed:
            failed.append(
                f"{asset_name}.{check_name}: "
                + ("never ran" if evaluation is None else f"failed {_plain(evaluation.metadata)}")
            )
    if failed:
        raise UncheckedArtifact("not publishing a serving manifest; the live one stays: " + "; ".join(failed))


def _latest_vocabulary(context: AssetExecutionContext) -> Vocabulary:
    """The vocabulary whose cities get indices (read after the gate: a fresh instance is refused by it)."""
    vocabulary = load_latest(context.instance, _key("vocabulary"), [None])
    if not isinstance(vocabulary, Vocabulary):
        raise TypeError(f"the vocabulary asset holds a {type(vocabulary).__name__}")
    return vocabulary


ALL_CITIES = AllPartitionMapping()


@asset(
    **SERVING,
    kinds={"json"},
    deps=[
        "vocabulary",
        "trained_model",
        "model_evaluation",  # its blocking quality gate must pass before a model is served
        "hetero_graph",
        "user_embeddings",
        "place_embeddings",
        AssetDep("place_index", partition_mapping=ALL_CITIES),
        AssetDep("user_index", partition_mapping=ALL_CITIES),
    ],
    description="The exact artifacts the service loads (paths, sha256, model version), published atomically.",
)
def serving_manifest(
    context: AssetExecutionContext, serving: ServingSettings, world: WorldSource
) -> Output[ServingManifest]:
    _require_passed_checks(context)
    vocabulary = _latest_vocabulary(context)
    model = _ref(context, _key("trained_model"))
    place_dir = model.directory / SERVED_PLACE_MODEL
    place_model = ArtifactRef.of_directory(place_dir, ARRAYS_FILE) if (place_dir / ARRAYS_FILE).is_file() else None
    people_dir = model.directory / SERVED_PEOPLE_MODEL
    people_model = ArtifactRef.of_directory(people_dir, PEOPLE_FILE) if (people_dir / PEOPLE_FILE).is_file() else None
    version = f"graphrec-{model.sha256[:12]}" + (f"-blend-{place_model.sha256[:8]}" if place_model else "")
    now = dt.datetime.now(dt.UTC)
    manifest = ServingManifest(
        version=f"{now:%Y%m%dT%H%M%SZ}-{context.run.run_id[:8]}",
        created_at=now.isoformat(),
        model_version=version,
        place_model=place_model,
        people_model=people_model,
        model=model,
        graph=_ref(context, _key("hetero_graph")),
        user_embeddings=_ref(context, _key("user_embeddings")),
        place_embeddings=_ref(context, _key("place_embeddings")),
        place_indices={str(i): _ref(context, _key("place_index"), s) for i, s in enumerate(vocabulary.city_slugs)},
        user_indices={str(i): _ref(context, _key("user_index"), s) for i, s in enumerate(vocabulary.city_slugs)},
        social_edges_are_friendships=serving.social_edges_are_friendships or world.edges_are_friendships(),
    )
    published = serving.releases().publish(manifest, serving.publish_as, serving.candidate_share)
    context.log.info(
        "published serving manifest %s (%s) as %s at %s",
        manifest.version,
        manifest.model_version,
        published.target,
        published.path,
    )
    return Output(
        manifest,
        metadata={
            "published_as": published.target,
            "live_manifest": str(serving.live_manifest_path()),
            "model_version": manifest.model_version,
            "version": manifest.version,
            "indices": _index_sizes(context, vocabulary),
            "manifest": MetadataValue.json(json.loads(manifest.to_json())),
        },
    )


@asset(
    **SERVING,
    kinds={"parquet"},
    description="Every user's top-K places (ids and scores), scored from the published manifest by the "
    "service's own code: a line is what /recommend/places answers for that user.",
)
def batch_recommendations(serving_manifest: ServingManifest, serving: ServingSettings) -> Output[pa.Table]:
    art = ServingArtifacts.load(serving_manifest)
    table = batch_places(art, serving.batch_top_k)
    lengths = pc.list_value_length(table.column("place_ids")).to_numpy()
    return Output(
        table,
        metadata={
            "dagster/row_count": table.num_rows,
            "k": serving.batch_top_k,
            "users with fewer than k": int((lengths < serving.batch_top_k).sum()),
            "model_version": serving_manifest.model_version,
            "manifest_version": serving_manifest.version,
        },
    )
