"""Vectorized sampling primitives shared by the generators (no per-row Python loops)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def top_k_mask(keys: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """Boolean mask of each row's k largest keys (k may differ per row).

    With uniform random keys this draws k distinct columns per row without replacement;
    columns whose key is set below every other key are only chosen when k demands it.
    """
    k = np.broadcast_to(np.asarray(k), (keys.shape[0],))
    ranks = np.argsort(np.argsort(-keys, axis=1, kind="stable"), axis=1, kind="stable")
    return ranks < k[:, None]


def sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) matrix of non-negative weights."""
    cdf = np.cumsum(probs, axis=1)
    draws = rng.random((len(probs), 1)) * cdf[:, -1:]
    draw: NDArray[np.intp] = np.minimum((cdf < draws).sum(axis=1), probs.shape[1] - 1)
    return draw


def sample_many_per_row(
    rng: np.random.Generator, probs: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw counts[i] columns with replacement from row i's distribution.

    Offsetting row i's normalized CDF by i makes one global increasing sequence, so a
    single searchsorted samples every row at once. Returns (row, column) arrays.
    """
    n_rows, n_cols = probs.shape
    cdf = np.cumsum(probs, axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    global_cdf = (cdf + np.arange(n_rows)[:, None]).ravel()
    rows = np.repeat(np.arange(n_rows), counts)
    flat = np.searchsorted(global_cdf, rows + rng.random(len(rows)), side="right")
    flat = np.minimum(flat, (rows + 1) * n_cols - 1)
    return rows, flat - rows * n_cols


def softmax_rows(scores: np.ndarray, temperature: float) -> np.ndarray:
    logits = scores / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    probs: NDArray[np.floating[Any]] = weights / weights.sum(axis=1, keepdims=True)
    return probs
