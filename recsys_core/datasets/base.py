"""An interaction-only dataset: users x items (weights) plus an optional friendship graph.

Rows and columns are dense indices; ``user_ids`` / ``item_ids`` map them back to the ids of
the input files, which is what every output file must use. The same object turns into the
project's tables (``to_tables``) and into the featureless ``GraphBundle`` the GraphRec
trainer consumes (``to_graph_bundle``), so real data runs through the same model code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys_core.graph import INTERACTS, REV_INTERACTS, SOCIAL, GraphBundle


class DatasetFormatError(ValueError):
    """An input file does not look like the dataset it is supposed to be."""


@dataclass(frozen=True)
class InteractionDataset:
    name: str
    user_ids: np.ndarray  # (n_users,) external id of each row
    item_ids: np.ndarray  # (n_items,) external id of each column
    interactions: sp.csr_matrix  # (n_users, n_items) float32, the raw weight (1 or a listen count)
    friends: sp.csr_matrix | None = None  # (n_users, n_users) symmetric 0/1, no diagonal

    @property
    def n_users(self) -> int:
        return int(self.interactions.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.interactions.shape[1])

    def binary(self) -> sp.csr_matrix:
        m = self.interactions.copy()
        m.data[:] = 1.0
        return m

    def counts_on(self, pairs: sp.csr_matrix) -> sp.csr_matrix:
        """The interaction counts of the given (user, item) pairs, e.g. of a carve's training part."""
        counts: sp.csr_matrix = self.interactions.multiply(pairs > 0).tocsr()
        return counts

    def with_interactions(
        self, interactions: sp.csr_matrix, friends: sp.csr_matrix | None = None
    ) -> InteractionDataset:
        return replace(self, interactions=interactions.tocsr(), friends=self.friends if friends is None else friends)

    def summary(self) -> dict[str, int]:
        out = {"users": self.n_users, "items": self.n_items, "interactions": int(self.interactions.nnz)}
        if self.friends is not None:
            out["friendships"] = int(self.friends.nnz // 2)
        return out

    # -- the project's tables --------------------------------------------------------------
    def to_tables(self) -> dict[str, pd.DataFrame]:
        """Users and places without features, interactions with their weight, social edges."""
        coo = self.interactions.tocoo()
        tables = {
            "users": pd.DataFrame({"user_id": self.user_ids.astype(np.int64)}),
            "places": pd.DataFrame({"place_id": self.item_ids.astype(np.int64)}),
            "interactions": pd.DataFrame(
                {
                    "user_id": self.user_ids[coo.row].astype(np.int64),
                    "place_id": self.item_ids[coo.col].astype(np.int64),
                    "weight": coo.data.astype(np.float32),
                }
            ),
        }
        u, v = _upper_pairs(self.friends)
        tables["user_user_edges"] = pd.DataFrame(
            {"user_u": self.user_ids[u].astype(np.int64), "user_v": self.user_ids[v].astype(np.int64)}
        )
        return tables

    def to_graph_bundle(self) -> GraphBundle:
        """The featureless hetero graph: id-only nodes, interacts (+ reverse) and social edges.

        The single edge feature of an interaction is log1p of its weight scaled to [0, 1], so
        the edge-aware backbone can tell a one-off listen from a favourite artist.
        """
        from torch_geometric.data import HeteroData

        coo = self.interactions.tocoo()
        order = np.lexsort((coo.col, coo.row))
        rows, cols = coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)
        weight = np.log1p(coo.data[order].astype(np.float64))
        attr = torch.from_numpy((weight / max(weight.max(), 1e-12)).astype(np.float32)).unsqueeze(-1)
        data = HeteroData()
        data["user"].num_nodes, data["place"].num_nodes = self.n_users, self.n_items
        data["user"].node_id = torch.from_numpy(self.user_ids.astype(np.int64))
        data["place"].node_id = torch.from_numpy(self.item_ids.astype(np.int64))
        edge_index = torch.from_numpy(np.stack([rows, cols]))
        for et, index in ((INTERACTS, edge_index), (REV_INTERACTS, edge_index.flip(0))):
            data[et].edge_index = index.contiguous()
            data[et].edge_attr = attr
        u, v = _upper_pairs(self.friends)
        data[SOCIAL].edge_index = torch.from_numpy(
            np.stack([np.concatenate([u, v]), np.concatenate([v, u])]).astype(np.int64)
        )
        data[SOCIAL].edge_attr = torch.ones(2 * len(u), 1)
        empty = torch.zeros(0, dtype=torch.long)
        return GraphBundle(data, torch.zeros(2, 0, dtype=torch.long), empty, empty)


def _upper_pairs(friends: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
    if friends is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    upper = sp.triu(friends, k=1).tocoo()
    return upper.row.astype(np.int64), upper.col.astype(np.int64)


def symmetric_pairs(u: np.ndarray, v: np.ndarray, n: int) -> sp.csr_matrix:
    """A 0/1 symmetric adjacency without self loops from undirected pairs (duplicates merged)."""
    keep = u != v
    u, v = u[keep], v[keep]
    m = sp.csr_matrix((np.ones(2 * len(u), np.float32), (np.concatenate([u, v]), np.concatenate([v, u]))), shape=(n, n))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def relative_count_weights(counts: sp.csr_matrix, strength: float = 0.5) -> sp.csr_matrix:
    """1 + strength * log(1 + count / the user's mean count): a user's favourites weigh more than
    their one-off listens, without heavy listeners' rows drowning everyone else's. Constant
    counts (check-ins given as 1s) give a constant weight, which a degree-normalized filter ignores."""
    m = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    m.eliminate_zeros()
    n = np.diff(m.indptr)
    mean = np.asarray(m.sum(axis=1)).ravel() / np.maximum(n, 1)
    m.data = 1.0 + strength * np.log1p(m.data / np.repeat(mean, n))
    return m


def carve_validation(
    matrix: sp.csr_matrix, fraction: float, seed: int, min_keep: int = 1
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Per row, hold out round(fraction * n) random entries, keeping at least ``min_keep``.

    Mirrors how the LightGCN split was made (a share of every user's items), so tuning on the
    held-out part is tuning on the shape of the real test split.
    """
    m = sp.csr_matrix(matrix, copy=True)
    m.sum_duplicates()
    rng = np.random.default_rng(seed)
    counts = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((rng.random(m.nnz), rows))  # entries shuffled within each row
    rank = np.arange(m.nnz) - m.indptr[rows[order]]
    n_out = np.minimum(np.round(counts * fraction).astype(np.int64), np.maximum(counts - min_keep, 0))
    held = np.zeros(m.nnz, dtype=bool)
    held[order[rank < n_out[rows[order]]]] = True
    coo = m.tocoo()
    keep = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), shape=m.shape)
    out = sp.csr_matrix((coo.data[held], (coo.row[held], coo.col[held])), shape=m.shape)
    return keep, out


def carve_pairs(friends: sp.csr_matrix, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Hold out a random ``fraction`` of undirected friendships (as the friends test split was made)."""
    u, v = _upper_pairs(friends)
    rng = np.random.default_rng(seed)
    held = rng.random(len(u)) < fraction
    n = friends.shape[0]
    return symmetric_pairs(u[~held], v[~held], n), symmetric_pairs(u[held], v[held], n)
