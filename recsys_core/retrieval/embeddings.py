"""Exported node embeddings: what the ANN indices hold and what the service scores with.

Embeddings come from the trained encoders + backbone over the *full* graph (held-out pairs
included: serving should know everything that happened). Each user row also names the
past places and the friends (social neighbours) whose messages weighed most in the last
message-passing layer (GAT attention or the edge-aware gate), and the user's display name
where the world has one: the "people who go to X go here" and "Priya, your friend, goes
here" explanations. A table written before friends and names has neither column; the
service reads it as naming no one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from numpy.typing import NDArray

from recsys_core import contracts
from recsys_core.graph import REV_INTERACTS, SOCIAL, GraphBundle
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs

EdgeType = tuple[str, str, str]
N_INFLUENCES = 3
# Friends kept per user: a recommended place is said to come through a friend only when one of
# these went there, so a few more than places (a friend's weight says little of where they go).
N_FRIEND_INFLUENCES = 5
FRIENDS = "influential_friend_ids"
NAMES = contracts.DISPLAY_NAME


def user_embedding_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("user_id", pa.int64()),
            ("city_id", pa.int32()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("influential_place_ids", pa.list_(pa.int64())),
            (FRIENDS, pa.list_(pa.int64())),  # heaviest first
            (NAMES, pa.string()),  # null: the user has no name
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
    offsets, flat = _top_sources(src, dst, weight, n_dst, k)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(n_dst)]


def _top_sources(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_dst: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """`top_influences` as list offsets and flat sources (heaviest first, ties in edge order), with
    no Python loop over the nodes: a million users' lists are a few sorts."""
    order = np.lexsort((-weight, dst))  # by destination, heaviest first
    dst_sorted, src_sorted = dst[order], src[order]
    starts = np.searchsorted(dst_sorted, np.arange(n_dst))
    rank = np.arange(len(dst_sorted)) - starts[dst_sorted]
    kept = rank < k
    counts = np.bincount(dst_sorted[kept], minlength=n_dst)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat: np.ndarray = src_sorted[kept]
    return offsets, flat


def _id_lists(offsets: np.ndarray, flat: np.ndarray, ids: np.ndarray) -> pa.ListArray[Any]:
    """Per-node lists of node ids as an Arrow list column."""
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(ids[flat], pa.int64()))


def _edge_weights(
    model: GraphRec, inputs: GraphInputs, edge_type: EdgeType
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source index, destination index, weight) of every message of `edge_type` in the last layer
    (none where the model passes no such messages, e.g. a model without social edges)."""
    weights = model.backbone.last_edge_weights.get(edge_type)
    if weights is None or edge_type not in inputs.relations:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    if model.config.backbone == "sage":  # gate weights come in the relation's CSR order
        relation = inputs.relations[edge_type]
        src, dst = relation.src, relation.dst
    else:  # attention comes in edge_index order
        src, dst = inputs.edge_index[edge_type]
    if weights.shape[0] != src.shape[0]:
        raise ValueError(f"{edge_type}: {weights.shape[0]} last-layer weights for {src.shape[0]} edges")
    return src.numpy(), dst.numpy(), weights.numpy()


def _names(bundle: GraphBundle) -> pa.Array[Any]:
    n = int(bundle.data["user"].num_nodes)
    names = bundle.user_names if bundle.user_names is not None else [None] * n
    if len(names) != n:
        raise ValueError(f"{len(names)} user names for {n} users")
    return pa.array(names, pa.string())


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
    places_in = _top_sources(*_edge_weights(model, inputs, REV_INTERACTS), len(user_ids), N_INFLUENCES)
    friends_in = _top_sources(*_edge_weights(model, inputs, SOCIAL), len(user_ids), N_FRIEND_INFLUENCES)
    dim = z["user"].shape[1]
    users = pa.Table.from_arrays(
        [
            pa.array(user_ids, pa.int64()),
            pa.array(inputs.city["user"].numpy().astype(np.int32)),
            _vectors(z["user"]),
            _id_lists(*places_in, place_ids),
            _id_lists(*friends_in, user_ids),
            _names(bundle),
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
