"""Per-city FAISS indices over embeddings: exact inner product when small, HNSW when large.

The choice is by size: a flat index over a few thousand rows answers in microseconds and is
exact; past `exact_max_rows` an HNSW graph keeps latency flat. The id map (row -> node id)
is a Parquet file beside the FAISS file, and recall against exact search is measurable on
any sample (the asset check uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
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
HNSW_EF_SEARCH = 256


@dataclass
class CityIndex:
    index: faiss.Index
    ids: np.ndarray  # row -> node id (int64)

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(self.index, faiss.IndexHNSW) else "exact"

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, node ids) of the k best rows per query; ids are -1 where fewer exist."""
        k = min(k, len(self))
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / INDEX_FILE
        faiss.write_index(self.index, str(path))
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
            index.hnsw.efSearch = HNSW_EF_SEARCH
        ids = pq.read_table(directory / IDS_FILE).sort_by("row").column("id").to_numpy()
        if len(ids) != index.ntotal:
            raise ValueError(f"{directory}: id map has {len(ids)} rows, the index {index.ntotal}")
        return cls(index, ids)


def build_city_index(ids: np.ndarray, vectors: np.ndarray, exact_max_rows: int = EXACT_MAX_ROWS) -> CityIndex:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    index: faiss.Index
    if len(vectors) <= exact_max_rows:
        index = faiss.IndexFlatIP(dim)
    else:
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBORS, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        index = hnsw
    index.add(vectors)
    return CityIndex(index, np.asarray(ids, dtype=np.int64))


def recall_vs_exact(city_index: CityIndex, vectors: np.ndarray, queries: np.ndarray, k: int = 50) -> float:
    """Share of the exact top-k (brute-force inner product over `vectors`) the index returns."""
    k = min(k, len(vectors))
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]
    _, found = city_index.search(queries, k)
    exact_ids = city_index.ids[exact]
    hits = [len(np.intersect1d(a, b)) for a, b in zip(exact_ids, found, strict=True)]
    return float(np.sum(hits) / (k * len(queries)))
