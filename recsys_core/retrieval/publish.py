"""Write a complete, servable artifact set without the orchestrator (benchmarks, notebooks).

The Dagster pipeline produces the same files asset by asset, with checks in between; this
is the same sequence in one call for places where a Dagster instance would be overhead.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys_core.graph import GraphBundle, save_graph
from recsys_core.manifest import ArtifactRef, ServingManifest, live_manifest_path
from recsys_core.model.checkpoint import WEIGHTS, save_checkpoint
from recsys_core.model.graphrec import GraphRec
from recsys_core.retrieval.embeddings import city_rows, embedding_matrix, export_embeddings
from recsys_core.retrieval.index import EXACT_MAX_ROWS, INDEX_FILE, build_city_index

EMBEDDINGS_FILE = "table.parquet"


def publish(
    model: GraphRec,
    bundle: GraphBundle,
    root: Path,
    version: str,
    exact_max_rows: int = EXACT_MAX_ROWS,
    social_edges_are_friendships: bool = False,
) -> Path:
    """Checkpoint, graph, embeddings, per-city indices and the live manifest under `root`
    (`social_edges_are_friendships`: the graph's social edges are declared friendships)."""
    root = Path(root)
    save_checkpoint(model, root / "model", vocabulary=bundle.vocabulary)  # vocabulary.json: what serving names ids with
    graph_file = save_graph(bundle, root / "graph").name
    tables = export_embeddings(model, bundle)
    refs = {}
    for name, table in (("user_embeddings", tables.users), ("place_embeddings", tables.places)):
        (root / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / name / EMBEDDINGS_FILE)
        refs[name] = ArtifactRef.of_directory(root / name, EMBEDDINGS_FILE)
    indices: dict[str, dict[str, ArtifactRef]] = {"place": {}, "user": {}}
    for kind, table, id_column in (("place", tables.places, "place_id"), ("user", tables.users, "user_id")):
        for city in np.unique(table.column("city_id").to_numpy()).tolist():
            rows = city_rows(table, city)
            directory = root / f"{kind}_index" / str(city)
            build_city_index(rows.column(id_column).to_numpy(), embedding_matrix(rows), exact_max_rows).save(directory)
            indices[kind][str(city)] = ArtifactRef.of_directory(directory, INDEX_FILE)
    model_ref = ArtifactRef.of_directory(root / "model", WEIGHTS)
    manifest = ServingManifest(
        version=version,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        model_version=f"graphrec-{model_ref.sha256[:12]}",
        model=model_ref,
        graph=ArtifactRef.of_directory(root / "graph", graph_file),
        user_embeddings=refs["user_embeddings"],
        place_embeddings=refs["place_embeddings"],
        place_indices=indices["place"],
        user_indices=indices["user"],
        social_edges_are_friendships=social_edges_are_friendships,
    )
    return manifest.write(live_manifest_path(root))
