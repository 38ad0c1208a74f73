"""People recommendation on a friendship graph: a proximity heuristic proposes, a learned re-ranker orders.

Signals, dense (n_users, n_users): personalized PageRank (the walk from u, restarts 0.05, 0.1 and
0.15, and the walk towards u), common neighbours, Adamic-Adar, resource allocation, Katz, paths of
length 3, taste cosine (tf-idf weighted listen vectors) and social taste (the friends' taste).
PageRank is left as the walk from u, neither symmetrized nor divided by the candidate's degree:
people with many friends are likelier to be someone's missing friend, and both normalizations
cost a third of the recall on validation.

The heuristic z(PPR 0.1) + 0.2 z(taste) + 0.2 z(social taste), each z-scored per user, needs no
training. It picks each user's 150 candidates; a logistic regression over every signal (its value,
its per-user z-score and its rank among the candidates) and both degrees re-orders them. The
regression is fit on an inner carve of whatever graph it is given, never on the pairs it is
evaluated on. Above DENSE_GRAPH_MAX_USERS the dense matrices do not fit in memory: refused with
an error naming the limit (a sparse, sampled path is the way to larger graphs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import minimize

from recsys_core.baselines._common import row_standardize
from recsys_core.datasets.base import carve_pairs

logger = logging.getLogger(__name__)

# ~17 dense float64 n x n matrices and four inverses: about 4 GB at 5,000 users, 60 GB at 20,000.
DENSE_GRAPH_MAX_USERS = 5_000
PPR_RESTARTS = (0.05, 0.1, 0.15)
KATZ_DECAY = 0.1  # times 1 / spectral radius
HEURISTIC_WEIGHTS = {"ppr_0.1": 1.0, "taste_cosine": 0.2, "social_taste": 0.2}
N_CANDIDATES = 150
L2_C = 0.1  # inverse L2 strength of the re-ranker (stable from 0.01 to 1 on validation)
NOT_A_CANDIDATE = -1e6  # added to the heuristic outside the candidates: always ranked below them


def _inv(x: np.ndarray) -> np.ndarray:
    inverse: NDArray[np.float64] = np.divide(1.0, x, out=np.zeros_like(x, dtype=np.float64), where=x > 0)
    return inverse


def taste_cosine(interactions: sp.csr_matrix) -> np.ndarray:
    """Cosine of log(1 + count) x idf listen vectors (shared rare artists say more than shared hits)."""
    m = interactions.astype(np.float64).tocsr(copy=True)
    m.data = np.log1p(m.data)
    df = np.bincount(m.indices, minlength=m.shape[1]).astype(np.float64)
    x = (m @ sp.diags(np.log((1 + m.shape[0]) / (1 + df)))).toarray()
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    t: NDArray[np.float64] = x @ x.T
    np.fill_diagonal(t, 0.0)
    return t


def _ppr(walk: np.ndarray, restart: float) -> np.ndarray:
    """Row u: where a random walk from u that restarts with this probability spends its time."""
    return restart * np.linalg.inv(np.eye(len(walk)) - (1 - restart) * walk)


@dataclass
class FriendSignals:
    """Every signal of one friend graph (plus the listens), and the heuristic built from them."""

    matrices: dict[str, np.ndarray]
    adjacency: np.ndarray
    degree: np.ndarray
    heuristic: np.ndarray

    @classmethod
    def build(
        cls, friends: sp.csr_matrix, interactions: sp.csr_matrix, taste: np.ndarray | None = None
    ) -> FriendSignals:
        n = friends.shape[0]
        if n > DENSE_GRAPH_MAX_USERS:
            raise ValueError(f"{n} users: the dense friend signals are built for at most {DENSE_GRAPH_MAX_USERS}")
        a = friends.toarray().astype(np.float64)
        deg = a.sum(1)
        taste = taste_cosine(interactions) if taste is None else taste
        walk = a * _inv(deg)[:, None]
        ppr = {f"ppr_{r}": _ppr(walk, r) for r in PPR_RESTARTS}
        cn = a @ a
        radius = float(np.max(np.abs(np.linalg.eigvalsh(a)))) if n else 0.0
        norm_adj = np.sqrt(_inv(np.maximum(deg, 1)))[:, None] * a * np.sqrt(_inv(np.maximum(deg, 1)))[None, :]
        friends_taste = norm_adj @ taste  # (u, v): how much u's friends like what v likes
        m = {
            **ppr,
            "ppr_0.1_towards": ppr["ppr_0.1"].T,
            "common_neighbours": np.log1p(cn),  # counts log-scaled (ranking unchanged)
            "adamic_adar": np.log1p(a @ (a / np.log(np.maximum(deg, 2.0))[:, None])),
            "resource_allocation": a @ (a * _inv(deg)[:, None]),
            "katz": np.linalg.inv(np.eye(n) - KATZ_DECAY / max(radius, 1e-9) * a) - np.eye(n),
            "paths_3": np.log1p(a @ cn),
            "taste_cosine": taste,
            "social_taste": friends_taste + friends_taste.T,
            "friends_taste_of_u": friends_taste,
            "friends_taste_of_v": friends_taste.T,
        }
        m["heuristic"] = heuristic = sum(w * row_standardize(m[name]) for name, w in HEURISTIC_WEIGHTS.items())
        if not isinstance(heuristic, np.ndarray):  # sum() of no arrays is 0
            raise ValueError("HEURISTIC_WEIGHTS is empty")
        return cls(m, a, deg, heuristic)

    def candidates(self, users: np.ndarray, n: int) -> np.ndarray:
        """(len(users), n): each user's best by the heuristic, never themself or an existing friend."""
        s = self.heuristic[users].copy()
        s[self.adjacency[users] > 0] = -np.inf
        s[np.arange(len(users)), users] = -np.inf
        return np.argsort(-s, axis=1, kind="stable")[:, :n]

    def design(self, users: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """(len(users) * n_candidates, n_features): per signal its value, per-user z-score and rank."""
        cols = []
        for m in self.matrices.values():
            rows = m[users]
            v = np.take_along_axis(rows, cand, 1)
            cols += [
                v,
                (v - rows.mean(1, keepdims=True)) / np.maximum(rows.std(1, keepdims=True), 1e-12),
                np.argsort(np.argsort(-v, axis=1, kind="stable"), axis=1) / cand.shape[1],
            ]
        log_deg = np.log1p(self.degree)
        cols += [log_deg[cand], np.broadcast_to(log_deg[users][:, None], cand.shape)]
        return np.stack(cols, -1).reshape(-1, len(cols))

    def feature_names(self) -> list[str]:
        return [f"{name}:{kind}" for name in self.matrices for kind in ("value", "z", "rank")] + [
            "log_degree:candidate",
            "log_degree:user",
        ]


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2_c: float) -> np.ndarray:
    """L2-regularized logistic regression (weights, then the bias), by L-BFGS."""
    x1 = np.hstack([x, np.ones((len(x), 1))])

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x1 @ w
        loss = np.sum(np.logaddexp(0, z) - y * z) + 0.5 / l2_c * (w[:-1] @ w[:-1])
        grad = x1.T @ (1 / (1 + np.exp(-z)) - y)
        grad[:-1] += w[:-1] / l2_c
        return loss, grad

    return minimize(loss_and_grad, np.zeros(x1.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 3000}).x


@dataclass
class FriendRanker:
    """The re-ranker: standardization and logistic weights over `FriendSignals.design` features."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    feature_names: list[str]
    n_candidates: int = N_CANDIDATES
    heuristic_only: bool = False  # nothing to learn from (no hidden friend among the candidates)

    @classmethod
    def fit(
        cls,
        friends: sp.csr_matrix,
        interactions: sp.csr_matrix,
        seed: int,
        fraction: float = 0.2,
        taste: np.ndarray | None = None,
    ) -> FriendRanker:
        """Hide `fraction` of `friends`; learn which of the remaining graph's candidates are the hidden ones."""
        inner, held = carve_pairs(friends, fraction, seed)
        signals = FriendSignals.build(inner, interactions, taste)
        users = np.flatnonzero(np.diff(held.indptr) > 0)
        cand = signals.candidates(users, N_CANDIDATES)
        x = signals.design(users, cand)
        y = (held[users].toarray()[np.arange(len(users))[:, None], cand] > 0).ravel().astype(np.float64)
        names = signals.feature_names()
        if not y.any():
            logger.warning("friend re-ranker: no hidden friend among the candidates; ranking by the heuristic")
            return cls(np.zeros(len(names)), 0.0, np.zeros(len(names)), np.ones(len(names)), names, heuristic_only=True)
        mean, std = x.mean(0), np.maximum(x.std(0), 1e-9)
        w = _fit_logistic((x - mean) / std, y, L2_C)
        logger.info(
            "friend re-ranker fit on %d candidate pairs of %d users (%d hidden friends among them)",
            len(y),
            len(users),
            int(y.sum()),
        )
        return cls(w[:-1], float(w[-1]), mean, std, names)

    def score(self, signals: FriendSignals, users: np.ndarray) -> np.ndarray:
        """(len(users), n_users): the re-ranker's score on the candidates, far below them elsewhere."""
        if self.heuristic_only:
            heuristic: NDArray[np.float32] = signals.heuristic[users].copy()
            return heuristic
        cand = signals.candidates(users, self.n_candidates)
        pred = (((signals.design(users, cand) - self.mean) / self.std) @ self.weights + self.bias).reshape(
            len(users), -1
        )
        # A user with fewer non-friends than candidates: the rest of the list is themself and friends.
        invalid = (signals.adjacency[users[:, None], cand] > 0) | (cand == users[:, None])
        pred[invalid] = -np.inf
        out: NDArray[np.float32] = signals.heuristic[users] + NOT_A_CANDIDATE
        np.put_along_axis(out, cand, pred, 1)
        out[np.arange(len(users)), users] = -np.inf
        return out

    def strongest(self, n: int = 8) -> dict[str, float]:
        """The largest weights (on standardized features), for the report."""
        order = np.argsort(-np.abs(self.weights))[:n]
        return {self.feature_names[i]: round(float(self.weights[i]), 3) for i in order}
