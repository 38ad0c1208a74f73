"""Friend (user-user link) prediction heuristics, vectorised with sparse products.

``adj`` is an undirected (symmetric) binary (n_users, n_users) adjacency; nonzero values
are treated as 1 (the matrix is binarised, and the symmetric closure is NOT taken, so pass
a symmetric matrix). Pair functions take ``pairs`` of shape (n, 2) and return (n,) float32;
the ``*_all`` functions return dense float32 (len(users), n_users) rows for full ranking.
They do not mask anything: the entry (u, u) holds u's own degree / AA self-sum, and
existing friends get scores too, so callers mask self and known links themselves.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "common_neighbours",
    "common_neighbours_all",
    "adamic_adar",
    "adamic_adar_all",
    "feature_cosine",
    "feature_cosine_all",
]


def _binary_adj(adj: sp.csr_matrix) -> sp.csr_matrix:
    a = sp.csr_matrix(adj, dtype=np.float32, copy=True)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square, got {a.shape}")
    a.sum_duplicates()
    a.eliminate_zeros()
    a.data[:] = 1.0
    return a


def _pairs(pairs: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
        raise IndexError(f"pair index out of range [0, {n})")
    return pairs[:, 0], pairs[:, 1]


def _users(users: ArrayLike, n: int) -> np.ndarray:
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if users.size and (users.min() < 0 or users.max() >= n):
        raise IndexError(f"user index out of range [0, {n})")
    return users


def _aa_weights(a: sp.csr_matrix) -> np.ndarray:
    """1 / log(deg(z)); nodes of degree <= 1 get 0 (they cannot be a common neighbour of two distinct nodes)."""
    deg = np.diff(a.indptr).astype(np.float64)
    w = np.zeros_like(deg)
    big = deg > 1
    w[big] = 1.0 / np.log(deg[big])
    return w


def _pair_weighted_overlap(a: sp.csr_matrix, u: np.ndarray, v: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    if len(u) == 0:
        return np.zeros(0, dtype=np.float32)
    both = a[u].multiply(a[v]).tocsr()  # row k = indicator of N(u_k) & N(v_k)
    if w is None:
        return np.asarray(both.sum(axis=1), dtype=np.float64).ravel().astype(np.float32)
    return np.asarray(both @ w, dtype=np.float64).ravel().astype(np.float32)


def common_neighbours(adj: sp.csr_matrix, pairs: np.ndarray) -> np.ndarray:
    """|N(u) & N(v)| for every (u, v) row of ``pairs``."""
    a = _binary_adj(adj)
    u, v = _pairs(pairs, a.shape[0])
    return _pair_weighted_overlap(a, u, v, None)


def adamic_adar(adj: sp.csr_matrix, pairs: np.ndarray) -> np.ndarray:
    """sum_{z in N(u) & N(v)} 1 / log |N(z)|  (Adamic & Adar, 2003) for every (u, v) row of ``pairs``."""
    a = _binary_adj(adj)
    u, v = _pairs(pairs, a.shape[0])
    return _pair_weighted_overlap(a, u, v, _aa_weights(a))


def common_neighbours_all(adj: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Common-neighbour counts of each of ``users`` with every user: dense (len(users), n_users)."""
    a = _binary_adj(adj)
    users = _users(users, a.shape[0])
    scores: NDArray[np.float32] = (a[users] @ a).toarray().astype(np.float32, copy=False)
    return scores


def adamic_adar_all(adj: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Adamic-Adar scores of each of ``users`` with every user: dense (len(users), n_users)."""
    a = _binary_adj(adj)
    users = _users(users, a.shape[0])
    w = sp.diags(_aa_weights(a).astype(np.float32))
    scores: NDArray[np.float32] = (a[users] @ w @ a).toarray().astype(np.float32, copy=False)
    return scores


def _unit_rows(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError("features must be a 2-D (n_users, n_features) array")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit: NDArray[np.float32] = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return unit


def feature_cosine(features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity of the feature rows of each pair; rows with zero norm give 0."""
    x = _unit_rows(features)
    u, v = _pairs(pairs, x.shape[0])
    cosine: NDArray[np.float32] = np.einsum("ij,ij->i", x[u], x[v]).astype(np.float32, copy=False)
    return cosine


def feature_cosine_all(features: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Cosine similarity of each of ``users`` with every user: dense (len(users), n_users)."""
    x = _unit_rows(features)
    users = _users(users, x.shape[0])
    return np.ascontiguousarray(x[users] @ x.T, dtype=np.float32)
