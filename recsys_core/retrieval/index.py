"""Per-city FAISS indices over embeddings: exact inner product when small, HNSW when large.

The choice is by size: a flat index over a few thousand rows answers in microseconds and is
exact; past `exact_max_rows` an HNSW graph keeps latency flat. HNSW's graph is built for a
metric and inner products are not one: on Gowalla's 41k places, whose vectors share a strong
common direction, an inner-product HNSW found a third of users' exact top 50. The search can be
reduced to L2 (Bachrach et al., 2014): each row gets one more coordinate, sqrt(M^2 - |x|^2) for
the longest row's length M, and each query a 0, so the nearest rows by L2 are exactly the largest
inner products (recall 0.999 there). Neither form wins everywhere (the reduction loses on
vectors whose lengths spread widely), so `build_city_index` measures the inner-product graph on a
sample of queries (its own rows by default) and builds the reduced one only when that falls short,
keeping the better; where both fall short (the place model's high-dimensional vectors) the search
widens (efSearch 384 -> 768 -> 1536) until the sample's recall reaches the target, and the index
keeps that efSearch.

The id map (row -> node id) is a Parquet file beside the FAISS file, and recall against exact
search is measurable on any sample (the asset check uses it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
EXACT_MAX_ROWS = 2048
HNSW_NEIGHBORS = 32
HNSW_EF_CONSTRUCTION = 200
WIDE_ROWS = (
    256  # rows at least this wide get twice the links (Gowalla's 512-wide place-model rows: 0.90 -> 0.94 ANN recall)
)
HNSW_EF_SEARCH = 384  # recall >= 0.99 on Gowalla (reduced) and on random Gaussian vectors (inner product)
EF_SEARCH_STEPS = (
    HNSW_EF_SEARCH,
    2 * HNSW_EF_SEARCH,
    4 * HNSW_EF_SEARCH,
)  # tried in turn until the sample's recall reaches RECALL_TARGET
SEARCH_FILE = "search.json"  # the efSearch the index was built with


@dataclass
class CityIndex:
    index: faiss.Index
    ids: np.ndarray  # row -> node id (int64)

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(self.index, faiss.IndexHNSW) else "exact"

    @property
    def reduced_to_l2(self) -> bool:
        """Rows carry the extra coordinate of the inner-product-to-L2 reduction (HNSW indices)."""
        return isinstance(self.index, faiss.IndexHNSW) and self.index.metric_type == faiss.METRIC_L2

    @property
    def dim(self) -> int:
        """The embeddings' dimension (the reduction's extra coordinate aside)."""
        return int(self.index.d) - int(self.reduced_to_l2)

    @cached_property
    def _longest_sq(self) -> float:
        """M^2: every reduced row is M long."""
        return float(np.sum(np.asarray(self.index.reconstruct(0), np.float64) ** 2)) if len(self) else 0.0

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(inner products, node ids) of the k best rows per query; ids are -1 where fewer exist."""
        k = min(k, len(self))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.reduced_to_l2:
            scores, rows = self.index.search(queries, k)
        else:
            padded = np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1), np.float32)]))
            distances, rows = self.index.search(padded, k)
            # |q - x'|^2 = |q|^2 + M^2 - 2 <q, x>
            lengths = np.sum(queries.astype(np.float64) ** 2, axis=1, keepdims=True)
            scores = ((lengths + self._longest_sq - distances) / 2).astype(np.float32)
        return scores, np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / INDEX_FILE
        faiss.write_index(self.index, str(path))
        if isinstance(self.index, faiss.IndexHNSW):
            (directory / SEARCH_FILE).write_text(json.dumps({"ef_search": int(self.index.hnsw.efSearch)}))
        pq.write_table(
            pa.table({"row": pa.array(np.arange(len(self.ids), dtype=np.int64)), "id": pa.array(self.ids)}),
            directory / IDS_FILE,
        )
        return path

    @classmethod
    def load(cls, directory: Path) -> CityIndex:
        directory = Path(directory)
        index = faiss.read_index(str(directory / INDEX_FILE))
        if isinstance(index, faiss.IndexHNSW):
            search = directory / SEARCH_FILE
            index.hnsw.efSearch = json.loads(search.read_text())["ef_search"] if search.is_file() else HNSW_EF_SEARCH
        ids = pq.read_table(directory / IDS_FILE).sort_by("row").column("id").to_numpy()
        if len(ids) != index.ntotal:
            raise ValueError(f"{directory}: id map has {len(ids)} rows, the index {index.ntotal}")
        return cls(index, ids)


RECALL_TARGET = 0.99  # of the exact top 50, on a sample of rows as queries (the asset check asks the same)
RETRIEVAL_DEPTH = 200  # how many rows a served request retrieves before it re-ranks them exactly
SERVED_TOP = 20  # a place-model index must hold the exact top 20 within what a request retrieves
RECALL_SAMPLE = 100


def default_queries(vectors: np.ndarray, n: int = RECALL_SAMPLE) -> np.ndarray:
    """A seeded sample of the rows themselves: the queries of an index of embeddings that users share."""
    sample: np.ndarray = vectors[np.random.default_rng(0).choice(len(vectors), min(n, len(vectors)), replace=False)]
    return sample


def _hnsw(vectors: np.ndarray, metric: int) -> faiss.IndexHNSWFlat:
    # Wide rows (the place model's concatenated parts) need more links per node to stay navigable.
    neighbors = HNSW_NEIGHBORS if vectors.shape[1] < WIDE_ROWS else 2 * HNSW_NEIGHBORS
    hnsw = faiss.IndexHNSWFlat(vectors.shape[1], neighbors, metric)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    hnsw.add(vectors)
    return hnsw


def _reduced_to_l2(vectors: np.ndarray) -> np.ndarray:
    lengths = np.sum(vectors.astype(np.float64) ** 2, axis=1)
    extra = np.sqrt(np.maximum(lengths.max() - lengths, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([vectors, extra[:, None]]))


def build_city_index(
    ids: np.ndarray, vectors: np.ndarray, exact_max_rows: int = EXACT_MAX_ROWS, queries: np.ndarray | None = None
) -> CityIndex:
    """Exact up to `exact_max_rows` rows; else an inner-product HNSW, or the L2-reduced one when that
    finds more of the exact top 50 for a seeded sample of the rows (see the module docstring). With
    `queries` (a sample of what requests will ask), what counts is how much of their exact top
    `SERVED_TOP` the index returns within `RETRIEVAL_DEPTH`: requests re-rank that many exactly."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if len(vectors) <= exact_max_rows:
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        return CityIndex(flat, ids)
    sample = queries if queries is not None else default_queries(vectors)
    k, depth = (SERVED_TOP, RETRIEVAL_DEPTH) if queries is not None else (50, None)

    def recall_of(index: CityIndex) -> float:
        return recall_vs_exact(index, vectors, sample, k, depth)

    inner_graph = _hnsw(vectors, faiss.METRIC_INNER_PRODUCT)
    inner = CityIndex(inner_graph, ids)
    inner_recall = recall_of(inner)
    if inner_recall >= RECALL_TARGET:
        return inner
    reduced_graph = _hnsw(_reduced_to_l2(vectors), faiss.METRIC_L2)
    reduced = CityIndex(reduced_graph, ids)
    reduced_recall = recall_of(reduced)
    graph, best, recall = (
        (reduced_graph, reduced, reduced_recall)
        if reduced_recall > inner_recall
        else (inner_graph, inner, inner_recall)
    )
    for ef in EF_SEARCH_STEPS[1:]:  # a wider search where the graph alone falls short (high-dimensional rows)
        if recall >= RECALL_TARGET:
            break
        graph.hnsw.efSearch = ef
        recall = recall_of(best)
    return best


def recall_vs_exact(
    city_index: CityIndex, vectors: np.ndarray, queries: np.ndarray, k: int = 50, depth: int | None = None
) -> float:
    """Share of the exact top-k (brute-force inner product over `vectors`) the index returns within
    its top `depth` (default: k)."""
    k = min(k, len(vectors))
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]
    _, found = city_index.search(queries, depth or k)
    exact_ids = city_index.ids[exact]
    hits = [len(np.intersect1d(a, b)) for a, b in zip(exact_ids, found, strict=True)]
    return float(np.sum(hits) / (k * len(queries)))
