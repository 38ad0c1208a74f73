"""Offline evaluation metrics for the recommenders.

Ranking metrics follow the LightGCN evaluation protocol so that numbers are
comparable with the literature: every user is ranked against the *full*
catalogue (no sampled negatives), items seen in training are excluded from the
ranking, and recall is ``hits / |test items of the user|`` (not divided by
``min(k, |test|)``). Users without held-out items get NaN and are dropped by the
aggregators, so per-user arrays can be stratified (e.g. by engagement tier)
before averaging.

Conventions:
  * ``topk`` arrays are ``(n_users, k)`` integer ids, best first. Negative ids
    are padding (fewer than ``k`` candidates): never a hit, ignored by coverage
    and novelty, rejected by intra-list diversity.
  * ``test`` / ``truth`` are ``(n_users, n_items)`` sparse matrices; any stored
    non-zero is a positive.

Everything is vectorised over users; only ``top_k_excluding`` walks over row
blocks to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.stats import rankdata

_BLOCK_CELLS = 1 << 23  # score cells ranked per block in top_k_excluding


# --------------------------------------------------------------------------- #
# Top-k retrieval
# --------------------------------------------------------------------------- #
def top_k_excluding(scores: np.ndarray, exclude: sp.csr_matrix | None, k: int) -> np.ndarray:
    """Return the ``(n_users, k)`` best item ids per user, best first.

    Items stored in ``exclude`` (the training interactions) get score ``-inf``;
    NaN scores are treated as ``-inf`` too. Ties are broken by the lower item
    index, including ties straddling the k-th position (a plain argpartition
    would pick an arbitrary subset there).
    """
    n_users, n_items = scores.shape
    if not 0 < k <= n_items:
        raise ValueError(f"k must be in [1, {n_items}], got {k}")
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude shape {exclude.shape} != scores shape {scores.shape}")
    dtype = np.result_type(scores.dtype, np.float32)
    block = max(1, _BLOCK_CELLS // n_items)
    out = np.empty((n_users, k), dtype=np.int64)
    for start in range(0, n_users, block):
        stop = min(start + block, n_users)
        chunk = np.array(scores[start:stop], dtype=dtype)  # copy: we write -inf
        chunk[np.isnan(chunk)] = -np.inf
        if exclude is not None:
            ex = exclude[start:stop].tocoo()
            nz = ex.data != 0
            chunk[ex.row[nz], ex.col[nz]] = -np.inf
        out[start:stop] = _top_k_block(chunk, k)
    return out


def _top_k_block(block: np.ndarray, k: int) -> np.ndarray:
    """Deterministic top-k of a dense block (no NaN): partition, then sort."""
    n_rows, n_items = block.shape
    kth = np.partition(block, n_items - k, axis=1)[:, n_items - k, None]
    above = block > kth
    tied = block == kth
    need = k - above.sum(axis=1, keepdims=True)
    take = above | tied
    # Among items tied with the k-th score keep the lowest indices. Only rows with more ties than
    # places left need the running count (rare for learned scores, common for popularity).
    crowded = np.flatnonzero(tied.sum(axis=1) > need[:, 0])
    if len(crowded):
        first_tied = np.cumsum(tied[crowded], axis=1, dtype=np.int32) <= need[crowded]
        take[crowded] = above[crowded] | (tied[crowded] & first_tied)
    cols = np.nonzero(take)[1].reshape(n_rows, k)  # ascending ids per row
    vals = np.take_along_axis(block, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # stable => lower id first
    return np.take_along_axis(cols, order, axis=1)


# --------------------------------------------------------------------------- #
# Hit matrix helpers
# --------------------------------------------------------------------------- #
def _positive_keys(test: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Sorted linear keys ``row * n_cols + col`` of positives and per-row counts."""
    t = sp.csr_matrix(test, copy=True)
    t.sum_duplicates()  # also sorts column indices
    t.eliminate_zeros()
    n_pos = np.diff(t.indptr)
    rows = np.repeat(np.arange(t.shape[0], dtype=np.int64), n_pos)
    return rows * t.shape[1] + t.indices, n_pos


def _hits(topk: np.ndarray, test: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(n_users, k)`` hit matrix and number of positives per user."""
    n_users, n_cols = test.shape
    if topk.ndim != 2 or topk.shape[0] != n_users:
        raise ValueError(f"topk shape {topk.shape} incompatible with test shape {test.shape}")
    keys, n_pos = _positive_keys(test)
    valid = (topk >= 0) & (topk < n_cols)
    query = np.arange(n_users, dtype=np.int64)[:, None] * n_cols + topk
    if keys.size == 0:
        return np.zeros(topk.shape, dtype=bool), n_pos
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return valid & (keys[pos] == query), n_pos


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _cutoff(topk: np.ndarray, k: int | None) -> int:
    if k is None:
        return int(topk.shape[1])
    if not 0 < k <= topk.shape[1]:
        raise ValueError(f"k must be in [1, {topk.shape[1]}], got {k}")
    return k


def _nan_without_test(values: ArrayLike, n_pos: np.ndarray) -> np.ndarray:
    return np.where(n_pos > 0, values, np.nan)


# Metrics from a precomputed hit matrix (hits may be narrower than k when the
# catalogue is smaller than the cutoff; slicing then covers the full ranking).
def _recall(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    return _safe_div(hits[:, :k].sum(axis=1), n_pos)


def _precision(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    return _nan_without_test(hits[:, :k].sum(axis=1) / k, n_pos)


def _hit_rate(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    return _nan_without_test(hits[:, :k].any(axis=1).astype(np.float64), n_pos)


def _ndcg(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    top = hits[:, :k]
    dcg = top @ discounts[: top.shape[1]]
    ideal_len = np.minimum(n_pos, k)
    idcg = np.concatenate(([0.0], np.cumsum(discounts)))[ideal_len]
    return _safe_div(dcg, idcg)


def _mrr(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    top = hits[:, :k]
    first = top.argmax(axis=1)
    rr = np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return _nan_without_test(rr, n_pos)


# --------------------------------------------------------------------------- #
# Public per-user ranking metrics
# --------------------------------------------------------------------------- #
def recall_at_k(topk: np.ndarray, test: sp.csr_matrix, k: int | None = None) -> np.ndarray:
    """Per-user ``hits@k / n_test_u`` (LightGCN definition); NaN if no test items."""
    k = _cutoff(topk, k)
    return _recall(*_hits(topk[:, :k], test), k)


def precision_at_k(topk: np.ndarray, test: sp.csr_matrix, k: int | None = None) -> np.ndarray:
    """Per-user ``hits@k / k``; NaN if no test items."""
    k = _cutoff(topk, k)
    return _precision(*_hits(topk[:, :k], test), k)


def hit_rate_at_k(topk: np.ndarray, test: sp.csr_matrix, k: int | None = None) -> np.ndarray:
    """Per-user 1.0 if any test item is in the top k else 0.0; NaN if no test items."""
    k = _cutoff(topk, k)
    return _hit_rate(*_hits(topk[:, :k], test), k)


def ndcg_at_k(topk: np.ndarray, test: sp.csr_matrix, k: int | None = None) -> np.ndarray:
    """Per-user binary-relevance NDCG@k.

    ``DCG = sum_r rel_r / log2(r + 2)`` over 0-based ranks ``r < k``; the ideal
    DCG places ``min(n_test_u, k)`` hits at the top. NaN if no test items.
    """
    k = _cutoff(topk, k)
    return _ndcg(*_hits(topk[:, :k], test), k)


def mrr(topk: np.ndarray, test: sp.csr_matrix, k: int | None = None) -> np.ndarray:
    """Per-user reciprocal rank of the first test item within the cutoff.

    The cutoff ``k`` defaults to the full width of ``topk``; users whose first
    positive lies beyond it score 0. NaN if no test items.
    """
    k = _cutoff(topk, k)
    return _mrr(*_hits(topk[:, :k], test), k)


def recall_at_k_of_sets(topk_ids: np.ndarray, truth: sp.csr_matrix, k: int | None = None) -> np.ndarray:
    """Recall@k for set-valued targets, e.g. friend recommendation.

    ``topk_ids`` are recommended ids per row (user ids for friends; ``-1`` pads
    short lists) and ``truth`` is the ``(n_rows, n_ids)`` sparse ground truth.
    Same definition as :func:`recall_at_k`.
    """
    return recall_at_k(topk_ids, truth, k)


# --------------------------------------------------------------------------- #
# Aggregation
# --------------------------------------------------------------------------- #
def mean_ignoring_nan(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a warning) if there are none."""
    values = np.asarray(values, dtype=np.float64)
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def ranking_report(
    scores: np.ndarray,
    train: sp.csr_matrix | None,
    test: sp.csr_matrix,
    ks: Sequence[int] = (5, 10, 20),
    ndcg_ks: Sequence[int] = (10, 20),
    mrr_k: int = 100,
) -> dict[str, np.ndarray]:
    """Per-user ``recall@k``, ``precision@k``, ``hit@k`` (k in ``ks``), ``ndcg@k``
    (k in ``ndcg_ks``) and ``mrr`` (cutoff ``mrr_k``), training items excluded.

    Cutoffs beyond the catalogue size evaluate the full ranking.
    """
    return ranking_report_of_top(
        top_k_excluding(scores, train, report_depth(scores.shape[1], ks, ndcg_ks, mrr_k)), test, ks, ndcg_ks, mrr_k
    )


def report_depth(
    n_items: int, ks: Sequence[int] = (5, 10, 20), ndcg_ks: Sequence[int] = (10, 20), mrr_k: int = 100
) -> int:
    """How deep a ranking `ranking_report` reads: its largest cutoff, or the whole catalogue."""
    return min(max((*ks, *ndcg_ks, mrr_k)), n_items)


def ranking_report_of_top(
    topk: np.ndarray,
    test: sp.csr_matrix,
    ks: Sequence[int] = (5, 10, 20),
    ndcg_ks: Sequence[int] = (10, 20),
    mrr_k: int = 100,
) -> dict[str, np.ndarray]:
    """`ranking_report` of a ranking already cut (`top_k_excluding` to `report_depth`), so a caller
    that also wants the top items ranks once."""
    hits, n_pos = _hits(topk, test)
    report: dict[str, np.ndarray] = {}
    for k in ks:
        report[f"recall@{k}"] = _recall(hits, n_pos, k)
        report[f"precision@{k}"] = _precision(hits, n_pos, k)
        report[f"hit@{k}"] = _hit_rate(hits, n_pos, k)
    for k in ndcg_ks:
        report[f"ndcg@{k}"] = _ndcg(hits, n_pos, k)
    report["mrr"] = _mrr(hits, n_pos, mrr_k)
    return report


def summarize(per_user: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float]:
    """Average each per-user metric over users with test items (NaN dropped),
    optionally restricted to users where the boolean ``mask`` is True."""
    if mask is None:
        return {name: mean_ignoring_nan(v) for name, v in per_user.items()}
    mask = np.asarray(mask, dtype=bool)
    return {name: mean_ignoring_nan(np.asarray(v)[mask]) for name, v in per_user.items()}


HISTORY_TIERS = (("zero", 0, 0), ("cold", 1, 5), ("warm", 6, 20), ("hot", 21, None))  # training pairs per user


def history_tiers(train_counts: np.ndarray) -> np.ndarray:
    """Label users by how many training pairs they have (`HISTORY_TIERS`): "zero" (none: served
    from profile and social edges alone), "cold" (1-5), "warm" (6-20), "hot" (21 or more)."""
    counts = np.asarray(train_counts)
    out = np.empty(len(counts), dtype=object)
    for name, lo, hi in HISTORY_TIERS:
        out[(counts >= lo) & (counts <= (hi if hi is not None else np.inf))] = name
    labels: np.ndarray = out.astype(str)
    return labels


# --------------------------------------------------------------------------- #
# Beyond-accuracy metrics
# --------------------------------------------------------------------------- #
def catalogue_coverage(topk: np.ndarray, n_items: int) -> float:
    """Fraction of the catalogue appearing in at least one list (padding ignored)."""
    ids = np.unique(topk)
    return float(np.count_nonzero((ids >= 0) & (ids < n_items)) / n_items)


def novelty(topk: np.ndarray, item_popularity: np.ndarray) -> float:
    """Mean self-information ``-log2(p_i)`` of recommended items.

    ``p_i`` is item i's share of all interactions (``item_popularity`` holds
    non-negative counts). Items never interacted with get the smallest positive
    share, so their self-information is finite.
    """
    pop = np.asarray(item_popularity, dtype=np.float64)
    total = pop.sum()
    if total <= 0:
        raise ValueError("item_popularity must have a positive sum")
    share = pop / total
    share = np.where(share > 0, share, share[share > 0].min())
    ids = topk[topk >= 0]  # drop padding
    return float(np.mean(-np.log2(share[ids]))) if ids.size else float("nan")


def intra_list_diversity(topk: np.ndarray, item_features: np.ndarray) -> float:
    """Mean over lists of the mean pairwise cosine distance ``1 - cos``.

    Uses ``sum_{i != j} cos_ij = ||sum_i x_i||^2 - sum_i ||x_i||^2`` on
    L2-normalised features, so the cost is O(n_users * k * d). Zero feature
    vectors have cosine 0 with everything.
    """
    k = topk.shape[1]
    if k < 2:
        raise ValueError("intra-list diversity needs lists of length >= 2")
    if (topk < 0).any():
        raise ValueError("intra-list diversity needs unpadded lists")
    feats = np.asarray(item_features, dtype=np.float64)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0)
    lists = unit[topk]  # (n_users, k, d)
    summed = lists.sum(axis=1)
    self_sim = np.einsum("nkd,nkd->n", lists, lists)
    pair_sim = (np.einsum("nd,nd->n", summed, summed) - self_sim) / (k * (k - 1))
    return float(np.mean(1.0 - pair_sim))


# --------------------------------------------------------------------------- #
# Classification metrics
# --------------------------------------------------------------------------- #
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney U statistic (average ranks for ties).

    NaN if only one class is present.
    """
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds.

    Tied scores form one threshold (same step-wise definition as scikit-learn's
    ``average_precision_score``). NaN if there are no positives.
    """
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    sorted_scores = np.asarray(scores, dtype=np.float64)[order]
    tp = np.cumsum(labels[order])
    # last position of each block of tied scores
    ends = np.flatnonzero(np.r_[np.diff(sorted_scores) != 0, True])
    precision = tp[ends] / (ends + 1.0)
    recall = tp[ends] / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))
