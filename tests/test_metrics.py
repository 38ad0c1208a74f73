import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.evaluation import metrics as m


def _csr(rows: list[list[int]], n_cols: int) -> sp.csr_matrix:
    r = [i for i, cols in enumerate(rows) for _ in cols]
    c = [j for cols in rows for j in cols]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_cols))


# 3 users x 6 items.
#   u0 scores descend with the item id, trains on item 0, holds out {2, 5}
#   u1 scores ascend with the item id, trains on item 5, holds out {0}
#   u2 has no held-out item -> NaN everywhere
SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [0.3, 0.1, 0.2, 0.6, 0.5, 0.4],
    ]
)
TRAIN = _csr([[0], [5], []], 6)
TEST = _csr([[2, 5], [0], []], 6)
# Full rankings with training items pushed last:
#   u0: 1 2 3 4 5 | 0      u1: 4 3 2 1 0 | 5      u2: 3 4 5 0 2 1
#
# @3: u0 top [1, 2, 3] -> hits [0, 1, 0]
#       recall = 1/2, precision = 1/3, hit = 1, mrr = 1/2
#       ndcg = (1/log2(3)) / (1 + 1/log2(3))      (ideal: 2 hits at ranks 0, 1)
#     u1 top [4, 3, 2] -> no hit: recall = precision = hit = ndcg = mrr = 0
# full list (k=6): u0 hits at ranks 1 and 4 -> recall 1, mrr 1/2,
#       ndcg = (1/log2(3) + 1/log2(6)) / (1 + 1/log2(3))
#     u1 first hit (item 0) at rank 4 -> mrr = 1/5, recall 1
L3, L6 = 1 / math.log2(3), 1 / math.log2(6)


@pytest.fixture
def topk3() -> np.ndarray:
    return m.top_k_excluding(SCORES, TRAIN, 3)


def test_top_k_hand_example(topk3):
    np.testing.assert_array_equal(topk3, [[1, 2, 3], [4, 3, 2], [3, 4, 5]])
    full = m.top_k_excluding(SCORES, TRAIN, 6)
    np.testing.assert_array_equal(full, [[1, 2, 3, 4, 5, 0], [4, 3, 2, 1, 0, 5], [3, 4, 5, 0, 2, 1]])


def test_exclusion_changes_top_k():
    without = m.top_k_excluding(SCORES, None, 2)
    with_ex = m.top_k_excluding(SCORES, TRAIN, 2)
    np.testing.assert_array_equal(without[:2], [[0, 1], [5, 4]])
    np.testing.assert_array_equal(with_ex[:2], [[1, 2], [4, 3]])
    assert not np.isin(with_ex[0], [0]).any() and not np.isin(with_ex[1], [5]).any()


def test_top_k_does_not_modify_scores():
    scores = SCORES.copy()
    m.top_k_excluding(scores, TRAIN, 3)
    np.testing.assert_array_equal(scores, SCORES)


def test_ties_broken_by_lower_index():
    scores = np.array(
        [
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
            [0.1, 0.9, 0.5, 0.9, 0.5, 0.5],  # tie inside the top and at the cut
        ]
    )
    np.testing.assert_array_equal(m.top_k_excluding(scores, None, 3), [[0, 1, 2], [1, 3, 2]])
    np.testing.assert_array_equal(m.top_k_excluding(scores, _csr([[0, 2], [3]], 6), 3), [[1, 3, 4], [1, 2, 4]])


def test_ties_match_reference_and_blocking(monkeypatch):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 40)).astype(float)  # many ties
    train = sp.random(50, 40, density=0.2, random_state=1, format="csr")
    masked = scores.copy()
    masked[train.toarray() != 0] = -np.inf
    ids = np.arange(40)
    expected = np.stack([np.lexsort((ids, -row))[:7] for row in masked])
    np.testing.assert_array_equal(m.top_k_excluding(scores, train, 7), expected)
    monkeypatch.setattr(m, "_BLOCK_CELLS", 3 * 40)  # 3 users per block
    np.testing.assert_array_equal(m.top_k_excluding(scores, train, 7), expected)


def test_nan_scores_rank_last():
    scores = np.array([[np.nan, 0.2, 0.1]])
    np.testing.assert_array_equal(m.top_k_excluding(scores, None, 3), [[1, 2, 0]])


def test_top_k_rejects_bad_k():
    with pytest.raises(ValueError):
        m.top_k_excluding(SCORES, None, 7)
    with pytest.raises(ValueError):
        m.top_k_excluding(SCORES, None, 0)


def test_recall_precision_hit(topk3):
    assert m.recall_at_k(topk3, TEST)[:2] == pytest.approx([0.5, 0.0])
    assert m.precision_at_k(topk3, TEST)[:2] == pytest.approx([1 / 3, 0.0])
    assert m.hit_rate_at_k(topk3, TEST)[:2] == pytest.approx([1.0, 0.0])
    # cutoff below the list width: u0 top-1 is item 1 -> miss
    assert m.recall_at_k(topk3, TEST, k=1)[0] == 0.0
    assert m.precision_at_k(topk3, TEST, k=2)[0] == pytest.approx(0.5)


def test_ndcg_hand_example(topk3):
    full = m.top_k_excluding(SCORES, TRAIN, 6)
    assert m.ndcg_at_k(topk3, TEST)[:2] == pytest.approx([L3 / (1 + L3), 0.0])
    assert m.ndcg_at_k(full, TEST)[:2] == pytest.approx([(L3 + L6) / (1 + L3), 1 / math.log2(6)])


def test_ideal_dcg_and_recall_when_more_positives_than_k():
    # 3 positives, k = 2, both slots hit -> perfect score 1 (ideal over 2 slots)
    topk = np.array([[0, 1]])
    assert m.ndcg_at_k(topk, _csr([[0, 1, 2]], 4))[0] == pytest.approx(1.0)
    # ...while recall divides by all 3 positives (LightGCN), not min(k, 3)
    assert m.recall_at_k(topk, _csr([[0, 1, 2]], 4))[0] == pytest.approx(2 / 3)


def test_mrr_cutoff(topk3):
    full = m.top_k_excluding(SCORES, TRAIN, 6)
    assert m.mrr(topk3, TEST)[:2] == pytest.approx([0.5, 0.0])
    assert m.mrr(full, TEST)[:2] == pytest.approx([0.5, 0.2])
    assert m.mrr(full, TEST, k=4)[1] == 0.0
    assert m.mrr(full, TEST, k=5)[1] == pytest.approx(0.2)


def test_users_without_test_items_are_nan(topk3):
    for fn in (m.recall_at_k, m.precision_at_k, m.hit_rate_at_k, m.ndcg_at_k, m.mrr):
        values = fn(topk3, TEST)
        assert np.isnan(values[2]) and not np.isnan(values[:2]).any(), fn.__name__
    assert m.mean_ignoring_nan(m.recall_at_k(topk3, TEST)) == pytest.approx(0.25)


def test_mean_ignoring_nan_all_nan():
    assert math.isnan(m.mean_ignoring_nan(np.array([np.nan, np.nan])))
    assert math.isnan(m.mean_ignoring_nan(np.array([])))


def test_explicit_zeros_in_test_are_not_positives(topk3):
    # u1 row stores item 4 (its top-1) with an explicit 0 next to item 0
    test = sp.csr_matrix(
        (np.array([1.0, 1.0, 1.0, 0.0]), np.array([2, 5, 0, 4]), np.array([0, 2, 4, 4])),
        shape=(3, 6),
    )
    assert test.nnz == 4
    assert m.hit_rate_at_k(topk3, test)[1] == 0.0
    assert m.recall_at_k(m.top_k_excluding(SCORES, TRAIN, 5), test)[1] == 1.0


def test_k_larger_than_list_rejected(topk3):
    with pytest.raises(ValueError):
        m.recall_at_k(topk3, TEST, k=4)


def test_ranking_report_hand_example():
    rep = m.ranking_report(SCORES, TRAIN, TEST, ks=(3,), ndcg_ks=(3, 6), mrr_k=6)
    assert set(rep) == {"recall@3", "precision@3", "hit@3", "ndcg@3", "ndcg@6", "mrr"}
    assert rep["recall@3"][:2] == pytest.approx([0.5, 0.0])
    assert rep["precision@3"][:2] == pytest.approx([1 / 3, 0.0])
    assert rep["hit@3"][:2] == pytest.approx([1.0, 0.0])
    assert rep["ndcg@3"][:2] == pytest.approx([L3 / (1 + L3), 0.0])
    assert rep["ndcg@6"][:2] == pytest.approx([(L3 + L6) / (1 + L3), 1 / math.log2(6)])
    assert rep["mrr"][:2] == pytest.approx([0.5, 0.2])
    assert all(np.isnan(v[2]) for v in rep.values())


def test_ranking_report_defaults_cap_at_catalogue():
    rep = m.ranking_report(SCORES, TRAIN, TEST)  # cutoffs up to 100 > 6 items
    assert {"recall@5", "recall@20", "ndcg@10", "ndcg@20", "hit@20", "mrr"} <= set(rep)
    assert rep["recall@20"][:2] == pytest.approx([1.0, 1.0])
    assert rep["precision@20"][:2] == pytest.approx([2 / 20, 1 / 20])
    assert rep["recall@5"][:2] == pytest.approx([1.0, 1.0])


def test_summarize_with_mask():
    per_user = {"a": np.array([1.0, np.nan, 3.0, 5.0]), "b": np.array([0.0, 1.0, 1.0, 1.0])}
    assert m.summarize(per_user) == pytest.approx({"a": 3.0, "b": 0.75})
    mask = np.array([True, True, False, False])
    assert m.summarize(per_user, mask) == pytest.approx({"a": 1.0, "b": 0.5})


def test_history_tiers_follow_the_training_history_size():
    np.testing.assert_array_equal(
        m.history_tiers(np.array([0, 1, 5, 6, 20, 21, 400])),
        ["zero", "cold", "cold", "warm", "warm", "hot", "hot"],
    )
    assert m.history_tiers(np.array([], np.int64)).shape == (0,)


def test_catalogue_coverage():
    assert m.catalogue_coverage(np.array([[0, 1], [1, 2]]), 5) == pytest.approx(3 / 5)
    assert m.catalogue_coverage(np.array([[0, -1], [0, -1]]), 4) == pytest.approx(1 / 4)


def test_novelty():
    # shares [0.5, 0.25, 0.25, 0 -> 0.25] -> self-information [1, 2, 2, 2]
    pop = np.array([2, 1, 1, 0])
    assert m.novelty(np.array([[0, 1], [2, 3]]), pop) == pytest.approx(1.75)
    assert m.novelty(np.array([[0, 0], [0, 1]]), pop) == pytest.approx(1.25)


def test_intra_list_diversity():
    feats = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]])
    c = 1 / math.sqrt(2)  # cos(item0, item2) = cos(item1, item2)
    # list [0, 1]: 1 - 0 = 1; list [0, 2]: 1 - c
    assert m.intra_list_diversity(np.array([[0, 1], [0, 2]]), feats) == pytest.approx((2 - c) / 2)
    # pairs (0,1), (0,2), (1,2): (1 + (1 - c) + (1 - c)) / 3
    assert m.intra_list_diversity(np.array([[0, 1, 2]]), feats) == pytest.approx((3 - 2 * c) / 3)
    # identical items -> 0; zero vector -> cosine 0 -> distance 1
    assert m.intra_list_diversity(np.array([[2, 2]]), feats) == pytest.approx(0.0)
    assert m.intra_list_diversity(np.array([[3, 2]]), feats) == pytest.approx(1.0)


def test_roc_auc_extremes():
    labels = np.array([0, 0, 1, 1])
    assert m.roc_auc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(1.0)
    assert m.roc_auc(labels, np.full(4, 0.7)) == pytest.approx(0.5)
    assert m.roc_auc(labels, np.array([0.4, 0.3, 0.2, 0.1])) == pytest.approx(0.0)
    assert math.isnan(m.roc_auc(np.ones(3), np.arange(3.0)))
    assert math.isnan(m.roc_auc(np.zeros(3), np.arange(3.0)))


def test_roc_auc_matches_pairwise_count():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=60)
    scores = rng.integers(0, 6, size=60).astype(float)  # ties on purpose
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert m.roc_auc(labels, scores) == pytest.approx(expected)


def test_pr_auc_hand_examples():
    # positives at ranks 1, 3, 5 -> (1/1 + 2/3 + 3/5) / 3 = 34/45
    labels = np.array([1, 0, 1, 0, 1])
    assert m.pr_auc(labels, np.array([0.9, 0.8, 0.7, 0.6, 0.5])) == pytest.approx(34 / 45)
    # ties form one threshold: (0.9) P=1 R=1/3, (0.8) P=2/3 R=2/3, (0.1) P=3/4 R=1
    # -> 1/3 * (1 + 2/3 + 3/4) = 29/36  (ignoring the tie would give 11/12)
    labels = np.array([1, 1, 0, 1])
    assert m.pr_auc(labels, np.array([0.9, 0.8, 0.8, 0.1])) == pytest.approx(29 / 36)
    assert m.pr_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert math.isnan(m.pr_auc(np.zeros(3), np.arange(3.0)))


def test_recall_at_k_of_sets_with_padding():
    # row 0 truth {2}; row 1 truth {1}. Padding -1 in row 1 must not alias (0, 2).
    truth = _csr([[2], [1]], 3)
    topk = np.array([[0, 1], [-1, 1]])
    np.testing.assert_allclose(m.recall_at_k_of_sets(topk, truth), [0.0, 1.0])
    np.testing.assert_allclose(m.recall_at_k_of_sets(topk, truth, k=1), [0.0, 0.0])
