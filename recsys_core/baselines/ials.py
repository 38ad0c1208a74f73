"""Implicit alternating least squares (iALS), and a small bag of differently weighted fits.

Reference: Y. Hu, Y. Koren, C. Volinsky, "Collaborative Filtering for Implicit Feedback
Datasets", ICDM 2008; conjugate-gradient updates as in G. Takacs, I. Pilaszy, D. Tikk,
"Applications of the conjugate gradient method for implicit feedback collaborative
filtering", RecSys 2011.

Every user u minimizes sum_i c_ui (p_ui - <x_u, y_i>)^2 + reg |x_u|^2 over all items, with
p_ui = 1 on observed pairs (confidence c_ui = 1 + alpha * weight) and 0 elsewhere (confidence 1);
items likewise. The exact per-row solve is a d x d system per user; here all rows take a few
conjugate-gradient steps at once, warm-started from the previous sweep, so a sweep is a handful
of sparse-dense products (no Python loop over users): seconds on Gowalla's 810k pairs.

Next to the graph filter, iALS is the component that adds the most on LastFM (validation):
neighbourhood and linear models are too alike to add much to each other, a factor model is not.
A single fit varies by about one recall point with its seed and weighting; the bag averages the
per-user z-scores of four.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from recsys_core.baselines._common import as_interactions, as_user_index, row_standardize

logger = logging.getLogger(__name__)


WEIGHTINGS = ("binary", "log")  # what an observed pair's confidence grows with: 1, or log(1 + count)


def _weighted(counts: sp.spmatrix | sp.sparray | ArrayLike, weighting: str) -> sp.csr_matrix:
    m = as_interactions(counts, binarize=weighting == "binary")
    if weighting == "log":
        m.data = np.log1p(m.data)
    return m


def _cg_sweep(x: np.ndarray, y: np.ndarray, conf: sp.csr_matrix, reg: float, steps: int) -> None:
    """In place: a few CG steps on every row's system (Y^T C_u Y + reg I) x_u = Y^T C_u p_u.

    `conf` holds c_ui - 1 on the observed pairs; the unobserved pairs' part is the shared Y^T Y."""
    gram = y.T @ y + reg * np.eye(y.shape[1], dtype=y.dtype)
    rows = np.repeat(np.arange(conf.shape[0]), np.diff(conf.indptr))
    y_obs = y[conf.indices]

    def apply(p: np.ndarray) -> np.ndarray:
        weights = np.einsum("ij,ij->i", y_obs, p[rows]) * conf.data
        out: NDArray[np.float32] = p @ gram + sp.csr_matrix((weights, conf.indices, conf.indptr), shape=conf.shape) @ y
        return out

    rhs = sp.csr_matrix((conf.data + 1.0, conf.indices, conf.indptr), shape=conf.shape) @ y
    r = rhs - apply(x)
    p = r.copy()
    rs = np.einsum("ij,ij->i", r, r)
    for _ in range(steps):
        ap = apply(p)
        alpha = rs / np.maximum(np.einsum("ij,ij->i", p, ap), 1e-20)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = np.einsum("ij,ij->i", r, r)
        p = r + (rs_new / np.maximum(rs, 1e-20))[:, None] * p
        rs = rs_new


class ImplicitALS:
    """One iALS fit: user and item factors; `score(users)` is <x_u, y_i> for every item."""

    def __init__(
        self,
        dim: int = 64,
        alpha: float = 20.0,
        reg: float = 50.0,
        weighting: str = "binary",
        iterations: int = 8,
        cg_steps: int = 3,
        seed: int = 0,
    ):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {sorted(WEIGHTINGS)}, got {weighting!r}")
        self.dim, self.alpha, self.reg, self.weighting = dim, alpha, reg, weighting
        self.iterations, self.cg_steps, self.seed = iterations, cg_steps, seed

    def fit(self, counts: sp.spmatrix | sp.sparray | ArrayLike) -> ImplicitALS:
        """`counts`: users x items, the interaction counts (or 1s); weighted by `weighting`."""
        conf = _weighted(counts, self.weighting)
        conf.data *= self.alpha
        conf_t = conf.T.tocsr()
        rng = np.random.default_rng(self.seed)
        self.user_factors = rng.normal(0, 0.01, (conf.shape[0], self.dim)).astype(np.float32)
        self.item_factors = rng.normal(0, 0.01, (conf.shape[1], self.dim)).astype(np.float32)
        for _ in range(self.iterations):
            _cg_sweep(self.user_factors, self.item_factors, conf, self.reg, self.cg_steps)
            _cg_sweep(self.item_factors, self.user_factors, conf_t, self.reg, self.cg_steps)
        return self

    def score(self, users: ArrayLike) -> np.ndarray:
        users = as_user_index(users, len(self.user_factors))
        scores: NDArray[np.float32] = self.user_factors[users] @ self.item_factors.T
        return scores


@dataclass(frozen=True)
class BagMember:
    weighting: str
    alpha: float
    reg: float


# Chosen on LastFM validation (seed-0 carve): reg about twice alpha matters (at 4-5x recall drops by 3-4 points).
DEFAULT_BAG = (
    BagMember("binary", 20, 50),
    BagMember("log", 20, 200),
    BagMember("binary", 100, 200),
    BagMember("log", 10, 100),
)


class BaggedALS:
    """The mean of per-user z-scored scores of several iALS fits (different weightings and seeds).

    With `time_budget_s`, no further fit starts once it is spent (the first always runs);
    `n_fits` takes only the first members (a refit matching a budget-cut bag)."""

    def __init__(
        self,
        members: tuple[BagMember, ...] = DEFAULT_BAG,
        dim: int = 64,
        iterations: int = 8,
        seed: int = 0,
        time_budget_s: float | None = None,
        n_fits: int | None = None,
    ):
        self.members = members[:n_fits] if n_fits else members
        self.dim, self.iterations, self.seed, self.time_budget_s = dim, iterations, seed, time_budget_s

    def fit(self, counts: sp.spmatrix | sp.sparray | ArrayLike) -> BaggedALS:
        started = time.perf_counter()
        self.fits: list[ImplicitALS] = []
        for j, m in enumerate(self.members):
            if self.fits and self.time_budget_s is not None and time.perf_counter() - started > self.time_budget_s:
                logger.info("iALS bag: time budget spent after %d of %d fits", len(self.fits), len(self.members))
                break
            self.fits.append(
                ImplicitALS(
                    self.dim, m.alpha, m.reg, m.weighting, self.iterations, seed=self.seed + 1000 * (j + 1)
                ).fit(counts)
            )
            logger.info("iALS bag: fit %d/%d done (%.1fs)", j + 1, len(self.members), time.perf_counter() - started)
        return self

    def score(self, users: ArrayLike) -> np.ndarray:
        total = sum(row_standardize(f.score(users)) for f in self.fits)
        if not isinstance(total, np.ndarray):  # sum() of no arrays is 0
            raise RuntimeError("BaggedALS has no fits to score with")
        return total / len(self.fits)
