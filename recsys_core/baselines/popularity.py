"""Most-popular baseline."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from recsys_core.baselines._common import as_interactions, as_user_index

logger = logging.getLogger(__name__)


class Popularity:
    """Non-personalised popularity: score(u, i) = number of training users who interacted with i.

    ``weighted=True`` sums the interaction weights instead of counting nonzeros.

    ``group_of_item`` (optional, one group id per item, e.g. the item's city) turns the
    score into the item's share of its group's interactions, count_i / sum_{j in g(i)} count_j.
    Within one group this is the same ranking as the plain count (the divisor is constant),
    so callers that restrict candidates to one city get identical results either way; the
    share only makes scores comparable across groups of very different size. Items in a
    group without interactions score 0.
    """

    def __init__(self, group_of_item: np.ndarray | None = None, weighted: bool = False) -> None:
        self.group_of_item = None if group_of_item is None else np.asarray(group_of_item)
        self.weighted = bool(weighted)
        self.item_scores: np.ndarray | None = None
        self.n_users = 0

    def fit(self, train: sp.csr_matrix) -> Popularity:
        train = as_interactions(train)
        self.n_users, n_items = train.shape
        if self.weighted:
            counts = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
        else:
            counts = np.bincount(train.indices, minlength=n_items).astype(np.float64)
        if self.group_of_item is not None:
            if len(self.group_of_item) != n_items:
                raise ValueError(f"group_of_item has {len(self.group_of_item)} entries for {n_items} items")
            _, group = np.unique(self.group_of_item, return_inverse=True)
            totals = np.bincount(group, weights=counts)
            denom = totals[group]
            counts = np.divide(counts, denom, out=np.zeros_like(counts), where=denom > 0)
        self.item_scores = counts.astype(np.float32)
        logger.info("Popularity: fitted %d items (max score %.3g)", n_items, float(counts.max(initial=0)))
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """The same popularity row for every user, shape (len(users), n_items), float32."""
        if self.item_scores is None:
            raise RuntimeError("Popularity.score called before fit")
        users = as_user_index(users, self.n_users)
        return np.tile(self.item_scores, (len(users), 1))
