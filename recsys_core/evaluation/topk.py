"""Chunked scoring -> top-K and validation metrics, shared by the model and every baseline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from recsys_core.evaluation import metrics

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user rows -> (len(rows), n_items) scores


def top_k(
    score: ScoreFn, users: np.ndarray, exclude: sp.csr_matrix, k: int, chunk: int = 2048, label: str = ""
) -> np.ndarray:
    """Top-k item indices of ``users`` (rows of ``exclude``), excluded items never returned."""
    out = np.empty((len(users), k), dtype=np.int64)
    t0, last = time.perf_counter(), time.perf_counter()
    for b0 in range(0, len(users), chunk):
        rows = users[b0 : b0 + chunk]
        out[b0 : b0 + len(rows)] = metrics.top_k_excluding(score(rows), exclude[rows], k)
        now = time.perf_counter()
        if now - last > 10 and b0 + chunk < len(users):
            done = b0 + len(rows)
            rate = done / (now - t0)
            logger.info(
                "%s: ranked %d/%d users (%.0f users/s, ETA %.0fs)",
                label,
                done,
                len(users),
                rate,
                (len(users) - done) / rate,
            )
            last = now
    return out


def ranking_metrics(topk: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, float]:
    """Recall@k and NDCG@k (LightGCN protocol: full ranking, training items excluded)."""
    return {
        f"recall@{k}": round(metrics.mean_ignoring_nan(metrics.recall_at_k(topk, truth, k)), 5),
        f"ndcg@{k}": round(metrics.mean_ignoring_nan(metrics.ndcg_at_k(topk, truth, k)), 5),
    }
