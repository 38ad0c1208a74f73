"""People recommendation on a friendship graph: a learned blend of link-prediction signals.

Each candidate pair (u, v) is described by graph-proximity features (common neighbours,
Adamic-Adar, resource allocation, Jaccard, length-3 paths, personalized PageRank, Katz),
taste similarity from the interactions (cosine of tf-idf weighted listen vectors, the same
smoothed over the friend graph, and of GraphRec embeddings when given) and the candidate's
degree. A logistic regression over log-scaled features is fit
on held-out friendships against sampled non-friends, so the weights say which signal
matters; the blend ranks every user against every other user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

logger = logging.getLogger(__name__)

FEATURES = (
    "common_neighbours", "adamic_adar", "resource_allocation", "jaccard", "paths_3",
    "personalized_pagerank", "katz", "taste_cosine", "social_taste", "embedding_cosine", "candidate_degree",
)
# Whole-graph proximities (matrix inverses, paths of length 3) are dense n x n computations;
# above this many users they are left out (zero) rather than slowing everything down.
DENSE_GRAPH_MAX_USERS = 20_000
PPR_RESTART = 0.15
KATZ_DECAY = 0.1  # times 1 / spectral radius


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def taste_vectors(interactions: sp.csr_matrix) -> np.ndarray:
    """Unit rows of log(1 + count) x idf: shared rare artists say more than shared hits."""
    m = interactions.astype(np.float32).tocsr(copy=True)
    m.data = np.log1p(m.data)
    df = np.bincount(m.indices, minlength=m.shape[1]).astype(np.float32)
    idf = np.log((1 + m.shape[0]) / (1 + df)).astype(np.float32)
    return _unit((m @ sp.diags(idf)).toarray())


@dataclass
class PairFeatures:
    """Dense (n_users, n_users) matrices, one per feature, for a fixed friend graph."""

    matrices: dict[str, np.ndarray]

    @classmethod
    def build(cls, friends: sp.csr_matrix, interactions: sp.csr_matrix, embeddings: np.ndarray | None = None) -> "PairFeatures":
        a = friends.astype(np.float32).tocsr()
        deg = np.asarray(a.sum(axis=1)).ravel()
        cn = (a @ a).toarray()
        log_deg = np.log(np.maximum(deg, 2.0))
        aa = (a @ sp.diags(1.0 / log_deg) @ a).toarray()
        ra = (a @ sp.diags(np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)) @ a).toarray()
        union = deg[:, None] + deg[None, :] - cn
        jac = np.divide(cn, union, out=np.zeros_like(cn), where=union > 0)
        small = a.shape[0] <= DENSE_GRAPH_MAX_USERS
        p3 = (a @ sp.csr_matrix(cn)).toarray() if small else np.zeros_like(cn)
        ppr, katz = _walk_proximities(a) if small else (np.zeros_like(cn), np.zeros_like(cn))
        taste = taste_vectors(interactions)
        taste_sim = taste @ taste.T
        norm_adj = sp.diags(_inv_sqrt(deg)) @ a @ sp.diags(_inv_sqrt(deg))
        social_taste = norm_adj @ taste_sim
        out = {
            "common_neighbours": cn, "adamic_adar": aa, "resource_allocation": ra, "jaccard": jac,
            "paths_3": p3 / np.maximum(np.sqrt(np.outer(np.maximum(deg, 1), np.maximum(deg, 1))), 1.0),
            "personalized_pagerank": ppr,
            "katz": katz,
            "taste_cosine": taste_sim,
            "social_taste": social_taste + social_taste.T,  # your friends' taste next to theirs
            "embedding_cosine": (lambda e: e @ e.T)(_unit(embeddings)) if embeddings is not None else np.zeros_like(cn),
            "candidate_degree": np.broadcast_to(deg[None, :], cn.shape),
        }
        return cls({k: np.asarray(v, dtype=np.float32) for k, v in out.items()})

    def design(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(len(rows), n_features) log-scaled features of the pairs (rows[i], cols[i])."""
        return np.stack([_transform(name, self.matrices[name][rows, cols]) for name in FEATURES], axis=1)

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_users, n_features) features of the given users against everyone."""
        return np.stack([_transform(name, self.matrices[name][rows]) for name in FEATURES], axis=-1)


def _inv_sqrt(deg: np.ndarray) -> np.ndarray:
    return np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)


def _walk_proximities(a: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Personalized PageRank (symmetrized) and the Katz index: all walk lengths, decayed."""
    n = a.shape[0]
    dense = a.toarray().astype(np.float64)
    deg = dense.sum(axis=1)
    walk = dense / np.maximum(deg, 1.0)[:, None]
    ppr = PPR_RESTART * np.linalg.inv(np.eye(n) - (1 - PPR_RESTART) * walk)
    radius = float(np.max(np.abs(np.linalg.eigvalsh(dense)))) if n else 0.0
    katz = np.linalg.inv(np.eye(n) - KATZ_DECAY / max(radius, 1e-9) * dense) - np.eye(n)
    return ppr + ppr.T, katz


def _transform(name: str, x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0)) if name in ("common_neighbours", "adamic_adar", "paths_3", "candidate_degree") else x


@dataclass
class FriendBlend:
    """Logistic-regression weights over standardized pair features."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def score(self, features: PairFeatures, rows: np.ndarray) -> np.ndarray:
        x = (features.dense(rows) - self.mean) / self.std
        return x @ self.weights + self.bias

    def as_dict(self) -> dict[str, float]:
        return {name: round(float(w), 4) for name, w in zip(FEATURES, self.weights)}


def fit_friend_blend(
    features: PairFeatures, known: sp.csr_matrix, held_out: sp.csr_matrix, seed: int,
    negatives_per_user: int = 200, l2: float = 1e-3,
) -> FriendBlend:
    """Fit on held-out friendships (positives) vs. non-friends (negatives) of the same users.

    Half of each user's negatives are hard (the best candidates by Adamic-Adar or taste), half
    uniform, so the blend learns to order the head of the list, not just to reject strangers.
    """
    rng = np.random.default_rng(seed)
    n = known.shape[0]
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    pos_r, pos_c, neg_r, neg_c = [], [], [], []
    for u in users:
        banned = np.zeros(n, dtype=bool)
        banned[u] = True
        banned[known.indices[known.indptr[u]:known.indptr[u + 1]]] = True
        positives = held_out.indices[held_out.indptr[u]:held_out.indptr[u + 1]]
        banned[positives] = True
        pos_r.append(np.full(len(positives), u)); pos_c.append(positives)
        pool = np.flatnonzero(~banned)
        hard_score = features.matrices["adamic_adar"][u, pool] + features.matrices["taste_cosine"][u, pool]
        hard = pool[np.argsort(-hard_score, kind="stable")[: negatives_per_user // 2]]
        easy = rng.choice(pool, size=min(negatives_per_user // 2, len(pool)), replace=False)
        negs = np.unique(np.concatenate([hard, easy]))
        neg_r.append(np.full(len(negs), u)); neg_c.append(negs)
    rows = np.concatenate(pos_r + neg_r)
    cols = np.concatenate(pos_c + neg_c)
    y = np.concatenate([np.ones(sum(map(len, pos_r))), np.zeros(sum(map(len, neg_r)))]).astype(np.float32)
    x = features.design(rows, cols)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    xt = torch.from_numpy(((x - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y)
    w = torch.zeros(xt.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    pos_weight = torch.tensor(float((y == 0).sum() / max((y == 1).sum(), 1)))
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt, pos_weight=pos_weight) + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    blend = FriendBlend(w.detach().numpy().copy(), float(b.detach()), mean.astype(np.float32), std.astype(np.float32))
    logger.info("friend blend fitted on %d pairs (%d positives): %s", len(y), int(y.sum()), blend.as_dict())
    return blend
