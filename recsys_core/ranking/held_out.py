"""A held-out part as the tuner sees it: sampled users, their held pairs, per-user metrics.

Users are ranked against their home city's places with their training places excluded, as
`evaluation.protocol` ranks them, so a setting chosen here is chosen for the measured ranking.
Each part's z-scored scores for these users are computed once (`zscored`) and blends of them
are sums, so the whole weight search costs one scoring per part.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray

from recsys_core.baselines._common import row_standardize
from recsys_core.evaluation import metrics

K = 20
ScoreRows = Callable[[np.ndarray], np.ndarray]  # user rows -> (rows, n_items) scores
SIGNIFICANCE = 2.0  # a swept filter setting replaces GF-CF's default only when this many standard errors better
BLEND_SIGNIFICANCE = 1.0  # a blend step (another model family, a weight) must be this many standard errors better


class HeldOut:
    def __init__(
        self,
        seen: sp.csr_matrix,
        held: sp.csr_matrix,
        user_city: np.ndarray,
        place_city: np.ndarray,
        max_users: int,
        seed: int,
    ):
        users = np.flatnonzero(np.diff(held.indptr) > 0)
        if len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users = users
        self.truth = held[users]
        self.exclude = seen[users]
        excluded = self.exclude.tocoo()
        self._excluded = (excluded.row, excluded.col)
        elsewhere = user_city[users][:, None] != place_city[None, :]  # outside the home city
        self.elsewhere = elsewhere if elsewhere.any() else None

    def __len__(self) -> int:
        return len(self.users)

    def scores(self, score: ScoreRows, chunk: int = 1024) -> NDArray[np.float32]:
        """(users, items): a part's scores for these users, computed in chunks."""
        blocks = [np.asarray(score(self.users[i : i + chunk]), np.float32) for i in range(0, len(self.users), chunk)]
        out: NDArray[np.float32] = np.vstack(blocks) if blocks else np.zeros((0, self.exclude.shape[1]), np.float32)
        return out

    def zscored(self, score: ScoreRows) -> NDArray[np.float32]:
        """(users, items): a part's per-user z-scores over every place."""
        return row_standardize(self.scores(score))

    def per_user(self, scores: np.ndarray) -> dict[str, NDArray[np.float64]]:
        """Per-user recall@20 and ndcg@20 of a score matrix (rows: `users`)."""
        ranked = np.array(scores, np.float32)  # a copy: excluded places become -inf
        ranked[self._excluded] = -np.inf
        if self.elsewhere is not None:
            ranked[self.elsewhere] = -np.inf
        # torch.topk: a tenth of the time of a tie-exact partition; ties of float scores are rare here
        top = torch.topk(torch.from_numpy(ranked), min(K, scores.shape[1]), dim=1).indices.numpy()
        return {
            f"recall@{K}": metrics.recall_at_k(top, self.truth, K),
            f"ndcg@{K}": metrics.ndcg_at_k(top, self.truth, K),
        }

    def summary(self, scores: np.ndarray) -> dict[str, float]:
        return {name: round(metrics.mean_ignoring_nan(v), 5) for name, v in self.per_user(scores).items()}


def significantly_better(candidate: np.ndarray, incumbent: np.ndarray, z: float = SIGNIFICANCE) -> bool:
    """Paired per-user recall: is the candidate's mean gain more than `z` standard errors?"""
    diff = np.asarray(candidate, np.float64) - np.asarray(incumbent, np.float64)
    diff = diff[~np.isnan(diff)]
    if len(diff) < 2:
        return False
    gain = float(diff.mean())
    return gain > 0 and gain > z * float(diff.std(ddof=1)) / np.sqrt(len(diff))
