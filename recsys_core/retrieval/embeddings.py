"""Exported node embeddings: what the ANN indices hold and what the service scores with.

Embeddings come from the trained encoders + backbone over the *full* graph (held-out pairs
included: serving should know everything that happened). Each user row also names the
past places whose messages weighed most in the last message-passing layer (GAT attention
or the edge-aware gate): the "because you went to ..." explanation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from numpy.typing import NDArray

from recsys_core.graph import REV_INTERACTS, GraphBundle
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs

N_INFLUENCES = 3


def user_embedding_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("user_id", pa.int64()),
            ("city_id", pa.int32()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("influential_place_ids", pa.list_(pa.int64())),
        ]
    )


RETRIEVAL = "retrieval"  # the place model's item vectors (`ranking.PlaceBlend.item_vectors`): what place indices hold


def place_embedding_schema(dim: int, retrieval_dim: int = 0) -> pa.Schema:
    fields = [("place_id", pa.int64()), ("city_id", pa.int32()), ("embedding", pa.list_(pa.float32(), dim))]
    if retrieval_dim:
        fields.append((RETRIEVAL, pa.list_(pa.float32(), retrieval_dim)))
    return pa.schema(fields)


def index_column(table: pa.Table) -> str:
    """The column a place or user index is built from: the place model's vectors where there are."""
    return RETRIEVAL if RETRIEVAL in table.column_names else "embedding"


@dataclass(frozen=True)
class EmbeddingTables:
    users: pa.Table
    places: pa.Table


def _vectors(z: torch.Tensor | np.ndarray) -> pa.FixedSizeListArray[Any, int]:
    matrix = z.numpy() if isinstance(z, torch.Tensor) else z
    flat = pa.array(matrix.astype(np.float32).ravel(), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def top_influences(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_dst: int, k: int = N_INFLUENCES
) -> list[np.ndarray]:
    """For every destination node, the (up to) k sources with the largest edge weight."""
    order = np.lexsort((-weight, dst))  # by destination, heaviest first
    dst_sorted, src_sorted = dst[order], src[order]
    starts = np.searchsorted(dst_sorted, np.arange(n_dst))
    ends = np.searchsorted(dst_sorted, np.arange(n_dst), side="right")
    return [src_sorted[s : min(e, s + k)] for s, e in zip(starts, ends, strict=True)]


def _edge_weights(model: GraphRec, inputs: GraphInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(place index, user index, weight) of every place -> user message in the last layer."""
    weights = model.backbone.last_edge_weights.get(REV_INTERACTS)
    if weights is None:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    if model.config.backbone == "sage":  # gate weights come in the relation's CSR order
        relation = inputs.relations[REV_INTERACTS]
        src, dst = relation.src, relation.dst
    else:
        src, dst = inputs.edge_index[REV_INTERACTS]
    return src.numpy(), dst.numpy(), weights.numpy()


@torch.no_grad()
def export_embeddings(model: GraphRec, bundle: GraphBundle, retrieval: np.ndarray | None = None) -> EmbeddingTables:
    """One full-graph pass in eval mode; float32 rows keyed by the contract ids. `retrieval`: the
    place model's item vectors (one row per graph place), stored beside each place's embedding."""
    model.eval()
    inputs = GraphInputs.from_hetero(bundle.data, model.config.use_social, model.config.time_decay)
    model.check_fits(bundle.vocabulary, inputs)
    z = model.embed(inputs)
    user_ids = bundle.data["user"].node_id.numpy()
    place_ids = bundle.data["place"].node_id.numpy()
    src, dst, weight = _edge_weights(model, inputs)
    influences = top_influences(src, dst, weight, len(user_ids))
    dim = z["user"].shape[1]
    users = pa.Table.from_arrays(
        [
            pa.array(user_ids, pa.int64()),
            pa.array(inputs.city["user"].numpy().astype(np.int32)),
            _vectors(z["user"]),
            pa.array([place_ids[i].tolist() for i in influences], pa.list_(pa.int64())),
        ],
        schema=user_embedding_schema(dim),
    )
    place_columns: list[Any] = [
        pa.array(place_ids, pa.int64()),
        pa.array(inputs.city["place"].numpy().astype(np.int32)),
        _vectors(z["place"]),
    ]
    if retrieval is not None:
        if retrieval.shape[0] != len(place_ids):
            raise ValueError(f"{retrieval.shape[0]} retrieval vectors for {len(place_ids)} places")
        place_columns.append(_vectors(retrieval))
    places = pa.Table.from_arrays(
        place_columns, schema=place_embedding_schema(dim, 0 if retrieval is None else retrieval.shape[1])
    )
    return EmbeddingTables(users=users, places=places)


def embedding_matrix(table: pa.Table, name: str = "embedding") -> np.ndarray:
    """(rows, dim) float32 view of a vector column (`embedding` by default)."""
    column = table.column(name).combine_chunks()
    if not isinstance(column, pa.FixedSizeListArray):
        raise TypeError(f"{name} column is {column.type}, not a fixed-size list")
    dim = column.type.list_size
    vectors: NDArray[np.float32] = (
        column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
    )
    return vectors


def city_rows(table: pa.Table, city: int) -> pa.Table:
    """The rows of an embedding table that belong to one city (what its index holds)."""
    return table.filter(pc.equal(table.column("city_id"), pa.scalar(city)))


def embedding_problems(table: pa.Table, id_column: str, expected_ids: np.ndarray, dim: int) -> list[str]:
    """Why a table is not a usable embedding export: wrong width, non-finite rows, missing or extra ids."""
    problems = []
    width = table.schema.field("embedding").type.list_size
    if width != dim:
        problems.append(f"embedding width {width}, expected {dim}")
        return problems
    ids = table.column(id_column).to_numpy()
    for column in dict.fromkeys(["embedding", index_column(table)]):
        bad = ~np.isfinite(embedding_matrix(table, column)).all(axis=1)
        if bad.any():
            problems.append(
                f"{int(bad.sum())} rows with non-finite {column} values, e.g. {id_column} {ids[bad][:5].tolist()}"
            )
    missing = np.setdiff1d(expected_ids, ids)
    if len(missing):
        problems.append(f"{len(missing)} ids without an embedding, e.g. {missing[:5].tolist()}")
    extra = np.setdiff1d(ids, expected_ids)
    if len(extra):
        problems.append(f"{len(extra)} unexpected ids, e.g. {extra[:5].tolist()}")
    if len(np.unique(ids)) != len(ids):
        problems.append("duplicate ids")
    return problems
