"""The parts of the place model in their servable form, each scoring a user against every place.

Two kinds, both exact at serving time without scoring every place densely:

- `FactorPart`: <x_u, y_i>, an iALS fit's factors or GraphRec's embeddings.
- `FilterPart`: the GF-CF graph filter, ``r_u R~^T R~ + alpha r_u D^{-1/2} V_k^T V_k D^{1/2}``:
  a sparse term (the linear filter, two sparse products per user) plus a low-rank one.

The blend z-scores each part per user over every place. For a low-rank score ``a_u . B_i`` the
mean and variance over places are closed forms in ``a_u`` (the places' mean vector and second
moments), so the exact statistics never need the whole score row. A served model carries them
precomputed for every user (`UserStats`): a request then costs one query vector and, for the
filter, two sparse row products written on numpy gathers (`FilterPart.linear_row`, ~0.1 ms on
Gowalla where scipy's per-call overhead made the same products 2 ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys_core.baselines.item_filter import ItemItemFilter

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Moments:
    """Mean vector and second-moment matrix of item vectors (n x d), for closed-form score stats."""

    mean: F32  # (d,)
    second: NDArray[np.float64]  # (d, d): B^T B / n

    @classmethod
    def of(cls, items: np.ndarray) -> Moments:
        b = np.asarray(items, np.float64)
        n = max(len(b), 1)
        return cls(b.mean(0).astype(np.float32) if len(b) else np.zeros(b.shape[1], np.float32), b.T @ b / n)

    def mean_of(self, queries: np.ndarray) -> NDArray[np.float64]:
        """Per query row a: the mean over items of a . b_i."""
        out: NDArray[np.float64] = np.asarray(queries, np.float64) @ self.mean.astype(np.float64)
        return out

    def square_of(self, queries: np.ndarray) -> NDArray[np.float64]:
        """Per query row a: the mean over items of (a . b_i)^2."""
        a = np.asarray(queries, np.float64)
        out: NDArray[np.float64] = ((a @ self.second) * a).sum(axis=1)  # BLAS: einsum's is 20x slower here
        return out


SparseRow = tuple[NDArray[np.int64], NDArray[np.float64]]  # (sorted item indices, scores) of one user


@dataclass
class UserTerms:
    """What one part contributes for a block of users: a low-rank query against the part's item
    vectors, an optional sparse score per row, and the z-score statistics of the sum."""

    query: F32  # (rows, d_part)
    sparse: list[SparseRow] | None  # one per row, or None
    mean: NDArray[np.float64]  # (rows,)
    std: NDArray[np.float64]  # (rows,)


@dataclass(frozen=True)
class UserStats:
    """Every user's mean and std of one part's scores over every place (what z-scoring needs)."""

    mean: NDArray[np.float64]  # (n_users,)
    std: NDArray[np.float64]  # (n_users,)


MIN_STD = 1e-8  # row_standardize's floor: a constant row stands out nowhere


def _std(square: np.ndarray, mean: np.ndarray) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.sqrt(np.maximum(square - mean**2, 0.0))
    return np.maximum(out, MIN_STD)


def gather_rows(matrix: sp.csr_matrix, rows: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of `rows` of a CSR matrix, each row's values times its `scale`,
    concatenated: one vectorized gather instead of a scipy row slice (whose overhead dominates
    a single request)."""
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    positions = spans(starts, lengths)
    values = matrix.data[positions] * np.repeat(np.asarray(scale, np.float64), lengths)
    return matrix.indices[positions], values


def spans(starts: np.ndarray, lengths: np.ndarray) -> NDArray[np.int64]:
    """The positions starts[i] .. starts[i] + lengths[i] - 1 of every i, concatenated, without a loop."""
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    out: NDArray[np.int64] = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    return out


@dataclass
class FactorPart:
    """<user[u], item[i]>: the scores of a factor model or of GraphRec's embeddings."""

    user: F32  # (n_users, d)
    item: F32  # (n_items, d)

    stats: UserStats | None = None  # precomputed for every user (a served model's)

    def __post_init__(self) -> None:
        self.user = np.ascontiguousarray(self.user, np.float32)
        self.item = np.ascontiguousarray(self.item, np.float32)

    @cached_property
    def moments(self) -> Moments:
        return Moments.of(self.item)

    @property
    def item_vectors(self) -> F32:
        return self.item

    def dense(self, rows: np.ndarray) -> F32:
        out: F32 = self.user[rows] @ self.item.T
        return out

    def terms(self, rows: np.ndarray, sparse: bool = True) -> UserTerms:
        q = self.user[rows]
        if self.stats is not None:
            return UserTerms(q, None, self.stats.mean[rows], self.stats.std[rows])
        mean = self.moments.mean_of(q)
        return UserTerms(q, None, mean, _std(self.moments.square_of(q), mean))


@dataclass
class FilterPart:
    """GF-CF (`ItemItemFilter`) as arrays: ``s_u = (r_u R~^T) R~ + alpha (r_u L) U`` with
    L = D_I^{-1/2} V_k^T (items x k) and U = V_k D_I^{1/2} (k x items); ChebyCF's factored form
    (`spectral`) has the same shape, with its own factors (`spread` the first)."""

    weights: sp.csr_matrix  # R: users x items, the interaction weights the filter was fit on
    normalized: sp.csr_matrix  # R~ = D_U^{-1/2} R D_I^{-1/2}
    low_left: F32  # (items, k); k may be 0 (the linear filter alone)
    low_right: F32  # (k, items)
    alpha: float
    stats: UserStats | None = None  # precomputed for every user (a served model's)
    # The linear term's first factor where it is not `normalized` (ChebyCF: R~ D_I^-beta, with
    # `normalized` c R~ D_I^beta): scores are (r_u spread^T) normalized.
    spread: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.weights = sp.csr_matrix(self.weights, dtype=np.float32)
        self.normalized = sp.csr_matrix(self.normalized, dtype=np.float32)
        if self.spread is not None:
            self.spread = sp.csr_matrix(self.spread, dtype=np.float32)
        self.normalized_t = (self.spread if self.spread is not None else self.normalized).T.tocsr()
        self.low_left = np.ascontiguousarray(self.low_left, np.float32).reshape(self.n_items, -1)
        self.low_right = np.ascontiguousarray(self.low_right, np.float32).reshape(-1, self.n_items)

    @cached_property
    def moments(self) -> Moments:
        return Moments.of(self.low_right.T)

    @cached_property
    def normalized_low(self) -> NDArray[np.float64]:
        """R~ U^T (users x k): for the mean of (linear term) x (low-rank term) over items."""
        out: NDArray[np.float64] = np.asarray(self.normalized @ self.low_right.T, np.float64)
        return out

    @classmethod
    def from_filter(cls, fitted: ItemItemFilter) -> FilterPart:
        if fitted.weights is None:
            raise RuntimeError("FilterPart.from_filter needs a fitted ItemItemFilter")
        n_items = fitted.weights.shape[1]
        left = fitted.low_left if fitted.low_left is not None else np.zeros((n_items, 0), np.float32)
        right = fitted.low_right if fitted.low_right is not None else np.zeros((0, n_items), np.float32)
        spread = fitted.spread if fitted.spread is not fitted.normalized else None
        return cls(fitted.weights, fitted.normalized, left, right, fitted.low_weight, spread=spread)

    @property
    def n_items(self) -> int:
        return int(self.weights.shape[1])

    @property
    def item_vectors(self) -> F32:
        out: F32 = self.low_right.T
        return out

    @property
    def n_users(self) -> int:
        return int(self.weights.shape[0])

    def _co_users(self, rows: np.ndarray) -> sp.csr_matrix:
        """r_u R~^T: (rows x users), how much each other user shares with u."""
        out: sp.csr_matrix = (self.weights[rows] @ self.normalized_t).tocsr()
        return out

    def dense(self, rows: np.ndarray) -> F32:
        linear = (self._co_users(rows) @ self.normalized).toarray()
        if self.low_left.shape[1]:
            linear += self.alpha * ((self.weights[rows] @ self.low_left) @ self.low_right)
        out: F32 = linear.astype(np.float32)
        return out

    def _user_row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.weights.indptr[row], self.weights.indptr[row + 1]
        return self.weights.indices[start:end], self.weights.data[start:end]

    def linear_row(self, row: int) -> SparseRow:
        """The linear filter's scores r_u R~^T R~ of one user as a sparse row: the two products
        as numpy gathers and bincounts."""
        items, weights = self._user_row(row)
        users, shares = gather_rows(self.normalized_t, items, weights)
        co = np.bincount(users, shares, minlength=self.n_users)
        co_users = np.flatnonzero(co)
        cols, values = gather_rows(self.normalized, co_users, co[co_users])
        linear = np.asarray(np.bincount(cols, values, minlength=self.n_items), np.float64)
        scored = np.flatnonzero(linear).astype(np.int64)
        return scored, linear[scored]

    def block_stats(self, rows: np.ndarray, q: np.ndarray) -> UserStats:
        """Mean and std over every item of a block of users' scores (`q`: their low-rank queries),
        with scipy's block products (offline: `PlaceBlend.precompute_user_stats`)."""
        co_users = self._co_users(rows)
        linear: sp.csr_matrix = (co_users @ self.normalized).tocsr()
        n = self.n_items
        lin_sum = np.asarray(linear.sum(axis=1), np.float64).ravel()
        lin_square = np.asarray(linear.multiply(linear).sum(axis=1), np.float64).ravel()
        # mean_i (lin_i + q . U_i) and mean_i (lin_i + q . U_i)^2, the cross term through R~ U^T
        mean = lin_sum / n + self.moments.mean_of(q)
        cross = np.einsum("ij,ij->i", np.asarray(co_users @ self.normalized_low, np.float64), q)
        square = lin_square / n + 2.0 * cross / n + self.moments.square_of(q)
        return UserStats(mean, _std(square, mean))

    def terms(self, rows: np.ndarray, sparse: bool = True) -> UserTerms:
        """`sparse=False` leaves the linear scores out (where only the query vectors are wanted)."""
        rows = np.asarray(rows, np.int64)
        q = np.zeros((len(rows), self.low_left.shape[1]), np.float32)
        for j, row in enumerate(rows):
            items, weights = self._user_row(int(row))
            q[j] = self.alpha * (weights @ self.low_left[items])
        if self.stats is not None:
            stats = UserStats(self.stats.mean[rows], self.stats.std[rows])
        else:
            stats = self.block_stats(rows, q)
        linear = [self.linear_row(int(row)) for row in rows] if sparse else None
        return UserTerms(q, linear, stats.mean, stats.std)
