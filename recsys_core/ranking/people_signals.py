"""Who a user might befriend, signal by signal: rows of (block of users) x (every user), never n x n.

Signals: personalized PageRank (the walk from u, restarts 0.05, 0.1 and 0.15, and the walk towards
u), common neighbours, Adamic-Adar, resource allocation, Katz, paths of length 3, taste cosine
(tf-idf weighted interaction vectors) and social taste (the friends' taste). PageRank is the walk
from u, neither symmetrized nor divided by the candidate's degree: people with many friends are
likelier to be someone's missing friend (both normalizations cost a third of the recall on LastFM
validation). PageRank is solved exactly up to `EXACT_MAX_USERS` users and cut after `PPR_TERMS_LARGE` steps
beyond; Katz is a power series summed until it moves less than `TOLERANCE`. Taste terms go through
the sparse interaction matrix (X X^T is never formed), so a block of users costs O(block x users)
memory whatever the world's size.

The heuristic z(PPR 0.1) + 0.2 z(taste) + 0.2 z(social taste), each z-scored per user, needs no
training: it proposes each user's candidates for the re-ranker (`people.FriendRanker`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray
from scipy.sparse.linalg import eigsh

from recsys_core.baselines._common import row_standardize
from recsys_core.evaluation import metrics

PPR_RESTARTS = (0.05, 0.1, 0.15)
KATZ_DECAY = 0.1  # times 1 / spectral radius
HEURISTIC_WEIGHTS = {"ppr_0.1": 1.0, "taste_cosine": 0.2, "social_taste": 0.2}
TOLERANCE = 1e-7  # a power series stops when a term's largest entry is below this
MAX_TERMS = 500
EXACT_MAX_USERS = 5000  # up to this many users PageRank is solved exactly (three n x n inverses, ~0.6 GB)
PPR_TERMS_LARGE = 30  # beyond, the walk is cut after this many steps (the tail weighs (1 - restart)^30)
F64 = NDArray[np.float64]


def _inv(x: np.ndarray) -> F64:
    out: F64 = np.divide(1.0, x, out=np.zeros_like(x, dtype=np.float64), where=x > 0)
    return out


def _unit_tfidf(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """log(1 + count) x idf interaction rows of unit length (shared rare places say more than hits)."""
    m = sp.csr_matrix(interactions, dtype=np.float64, copy=True)
    m.data = np.log1p(m.data)
    df = np.bincount(m.indices, minlength=m.shape[1]).astype(np.float64)
    m = sp.csr_matrix(m @ sp.diags(np.log((1 + m.shape[0]) / (1 + df))))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(_inv(np.maximum(norms, 1e-12) * (norms > 0))) @ m)


def _series(start: F64, step: Callable[[F64], F64], max_terms: int = MAX_TERMS) -> F64:
    """start + step(start) + step(step(start)) + ... until a term is below TOLERANCE."""
    total, term = start.copy(), start
    for _ in range(max_terms):
        term = step(term)
        total += term
        if not term.size or float(np.abs(term).max()) < TOLERANCE:
            break
    return total


def _torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    m = sp.csr_matrix(matrix, dtype=np.float32)
    return torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data),
        size=m.shape,
    )


class FriendGraph:
    """A social graph and the interactions, with the sparse operators every signal row needs."""

    def __init__(self, friends: sp.csr_matrix, interactions: sp.csr_matrix):
        n = friends.shape[0]
        self.n = n
        self.adjacency = sp.csr_matrix(friends, dtype=np.float64)
        self.adjacency.data[:] = 1.0
        self.degree = np.asarray(self.adjacency.sum(axis=1)).ravel()
        self.walk = sp.csr_matrix(sp.diags(_inv(self.degree)) @ self.adjacency)  # row-stochastic D^-1 A
        self.walk_t = self.walk.T.tocsr()
        inv_sqrt = np.sqrt(_inv(np.maximum(self.degree, 1)))
        self.norm_adj = sp.csr_matrix(sp.diags(inv_sqrt) @ self.adjacency @ sp.diags(inv_sqrt))
        self.aa_weighted = sp.csr_matrix(sp.diags(1.0 / np.log(np.maximum(self.degree, 2.0))) @ self.adjacency)
        self.ra_weighted = sp.csr_matrix(sp.diags(_inv(self.degree)) @ self.adjacency)
        self.taste = _unit_tfidf(interactions)
        self.taste_t = self.taste.T.tocsr()
        self.has_taste = (np.diff(self.taste.indptr) > 0).astype(np.float64)
        self.friends_taste = sp.csr_matrix(self.norm_adj @ self.taste)  # row u: u's friends' mean taste
        radius = 0.0
        if self.adjacency.nnz:
            radius = (
                float(np.max(np.abs(np.linalg.eigvalsh(self.adjacency.toarray()))))
                if n <= 2000
                else float(abs(eigsh(self.adjacency, k=1, which="LA", return_eigenvectors=False)[0]))
            )
        self.katz_beta = KATZ_DECAY / max(radius, 1e-9)
        self.exact_ppr: dict[float, F64] = {}
        if n <= EXACT_MAX_USERS:
            walk = self.walk.toarray()
            self.exact_ppr = {
                r: np.asarray(r * np.linalg.inv(np.eye(n) - (1 - r) * walk), np.float64) for r in PPR_RESTARTS
            }
        else:
            self._torch_walk_t, self._torch_walk = _torch_csr(self.walk_t), _torch_csr(self.walk)

    def _walks(self, users: np.ndarray, transpose: bool) -> list[NDArray[np.float32]]:
        """e_u W^t for t = 0 .. PPR_TERMS_LARGE (or W^t e_u with `transpose`): the walk's steps every
        restart weighs differently, computed once (torch's sparse product uses every core)."""
        matrix = self._torch_walk_t if not transpose else self._torch_walk
        x = torch.zeros((self.n, len(users)), dtype=torch.float32)
        x[torch.from_numpy(users), torch.arange(len(users))] = 1.0
        steps = [x]
        for _ in range(PPR_TERMS_LARGE):
            steps.append(torch.sparse.mm(matrix, steps[-1]))
        return [step.T.numpy() for step in steps]

    @staticmethod
    def _ppr_of_walks(walks: list[NDArray[np.float32]], restart: float) -> F64:
        total = np.zeros(walks[0].shape, np.float64)
        for t, step in enumerate(walks):
            total += restart * (1 - restart) ** t * step
        return total

    def _pagerank(self, users: np.ndarray) -> dict[str, F64]:
        """PageRank from u for every restart, and towards u for 0.1."""
        if self.exact_ppr:
            out = {f"ppr_{r}": self.exact_ppr[r][users] for r in PPR_RESTARTS}
            out["ppr_0.1_towards"] = self.exact_ppr[0.1][:, users].T
            return out
        walks = self._walks(users, transpose=False)
        out = {f"ppr_{r}": self._ppr_of_walks(walks, r) for r in PPR_RESTARTS}
        out["ppr_0.1_towards"] = self._ppr_of_walks(self._walks(users, transpose=True), 0.1)
        return out

    def rows(self, users: np.ndarray) -> dict[str, F64]:
        """Every signal's rows for `users` (len(users) x n), in a fixed order."""
        users = np.asarray(users, np.int64)
        a = sp.csr_matrix(self.adjacency[users])
        cn = np.asarray((a @ self.adjacency).toarray())
        taste = np.asarray((self.taste[users] @ self.taste_t).toarray())
        taste[np.arange(len(users)), users] = 0.0
        # u's friends' taste . v's taste, a friend's cosine with themself left out (as in `taste`)
        of_u = np.asarray((self.friends_taste[users] @ self.taste_t).toarray())
        of_u -= self.norm_adj[users].toarray() * self.has_taste[None, :]
        of_v = np.asarray(self.norm_adj.T @ taste.T).T  # u's taste . v's friends' taste
        start = a.toarray() * self.katz_beta
        katz = _series(start, lambda x: self.katz_beta * np.asarray(self.adjacency.T @ x.T).T)
        signals = self._pagerank(users)
        signals |= {
            "common_neighbours": np.log1p(cn),  # counts log-scaled (ranking unchanged)
            "adamic_adar": np.log1p(np.asarray((a @ self.aa_weighted).toarray())),
            "resource_allocation": np.asarray((a @ self.ra_weighted).toarray()),
            "katz": katz,
            "paths_3": np.log1p(np.asarray(self.adjacency.T @ cn.T).T),
            "taste_cosine": taste,
            "social_taste": of_u + of_v,
            "friends_taste_of_u": of_u,
            "friends_taste_of_v": of_v,
        }
        return signals


def heuristic(signals: dict[str, F64]) -> F64:
    total = np.zeros_like(signals["taste_cosine"])
    for name, weight in HEURISTIC_WEIGHTS.items():
        total += weight * row_standardize(signals[name])
    return total


def candidates(graph: FriendGraph, users: np.ndarray, scores: F64, n: int) -> np.ndarray:
    """(len(users), n) each user's best by `scores`, never themself or an existing friend."""
    s = scores.copy()
    a = graph.adjacency[users]
    s[np.repeat(np.arange(len(users)), np.diff(a.indptr)), a.indices] = -np.inf
    s[np.arange(len(users)), users] = -np.inf
    return metrics.top_k_excluding(s, None, min(n, graph.n))  # by score, ties by the lower index


def design(graph: FriendGraph, signals: dict[str, F64], users: np.ndarray, cand: np.ndarray) -> NDArray[np.float64]:
    """(len(users) * n_candidates, n_features): per signal its value, per-user z-score and rank."""
    cols = []
    for rows in signals.values():
        v = np.take_along_axis(rows, cand, 1)
        cols += [
            v,
            (v - rows.mean(1, keepdims=True)) / np.maximum(rows.std(1, keepdims=True), 1e-12),
            np.argsort(np.argsort(-v, axis=1, kind="stable"), axis=1) / cand.shape[1],
        ]
    log_deg = np.log1p(graph.degree)
    cols += [log_deg[cand], np.broadcast_to(log_deg[users][:, None], cand.shape)]
    return np.stack(cols, -1).reshape(-1, len(cols))


def feature_names(signal_names: list[str]) -> list[str]:
    return [f"{name}:{kind}" for name in signal_names for kind in ("value", "z", "rank")] + [
        "log_degree:candidate",
        "log_degree:user",
    ]
