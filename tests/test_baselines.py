"""Tests for recsys_core.baselines (small synthetic data, fixed seeds)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core import baselines as B
from recsys_core.baselines import item_filter as item_filter_module

# ----------------------------------------------------------------------------- fixtures


def planted_blocks(
    seed: int = 0, per_group: int = 60, per_block: int = 40, n_own: int = 12, n_noise: int = 2, n_held: int = 3
):
    """Two user groups, each preferring its own half of the items; some own-block items held out.

    Returns (train csr, held-out (user, item) arrays, group of user, block of item).
    """
    rng = np.random.default_rng(seed)
    n_users, n_items = 2 * per_group, 2 * per_block
    group = np.repeat([0, 1], per_group)
    block = np.repeat([0, 1], per_block)
    rows, cols, held_u, held_i = [], [], [], []
    for u in range(n_users):
        own = np.flatnonzero(block == group[u])
        other = np.flatnonzero(block != group[u])
        chosen = rng.choice(own, n_own + n_held, replace=False)
        noise = rng.choice(other, n_noise, replace=False)
        train_items = np.concatenate([chosen[:n_own], noise])
        rows += [u] * len(train_items)
        cols += list(train_items)
        held_u += [u] * n_held
        held_i += list(chosen[n_own:])
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    return train, np.array(held_u), np.array(held_i), group, block


def block_auc(scores: np.ndarray, train: sp.csr_matrix, held_u, held_i, group, block) -> float:
    """Mean over users of AUC(held-out own-block items vs. the other block's non-training items)."""
    aucs = []
    dense_train = train.toarray() > 0
    for u in range(train.shape[0]):
        pos = held_i[held_u == u]
        neg = np.flatnonzero((block != group[u]) & ~dense_train[u])
        sp_, sn = scores[u, pos][:, None], scores[u, neg][None, :]
        aucs.append(np.mean((sp_ > sn) + 0.5 * (sp_ == sn)))
    return float(np.mean(aucs))


@pytest.fixture(scope="module")
def blocks():
    return planted_blocks(seed=0)


def small_models(seed: int = 0):
    return {
        "mf": B.MatrixFactorizationBPR(dim=16, epochs=20, lr=0.01, reg=1e-4, batch_size=256, seed=seed),
        "lightgcn": B.LightGCN(dim=16, layers=2, epochs=20, lr=0.01, reg=1e-4, batch_size=256, seed=seed),
        "filter": B.ItemItemFilter(alpha=0.3, k=4, seed=seed),
        "pop": B.Popularity(),
    }


@pytest.fixture(scope="module")
def fitted(blocks):
    train = blocks[0]
    return {name: m.fit(train) for name, m in small_models(seed=0).items()}


# ----------------------------------------------------------------------------- item models


@pytest.mark.parametrize("name", ["mf", "lightgcn", "filter", "pop"])
def test_score_shape_and_dtype(fitted, blocks, name):
    train = blocks[0]
    users = np.array([0, 5, 7, 119])
    s = fitted[name].score(users)
    assert s.shape == (4, train.shape[1])
    assert s.dtype == np.float32
    assert np.isfinite(s).all()
    # a single user given as a list also works and matches the batched row
    np.testing.assert_allclose(fitted[name].score([5])[0], s[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "filter"])
def test_deterministic_given_seed(fitted, blocks, name):
    train = blocks[0]
    users = np.arange(train.shape[0])
    again = small_models(seed=0)[name].fit(train).score(users)
    np.testing.assert_array_equal(again, fitted[name].score(users))


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_seed_matters(fitted, blocks, name):
    train = blocks[0]
    users = np.arange(10)
    other = small_models(seed=1)[name].fit(train).score(users)
    assert not np.allclose(other, fitted[name].score(users))


@pytest.mark.parametrize("name", ["mf", "lightgcn", "filter"])
def test_planted_blocks_recovered(fitted, blocks, name):
    train, held_u, held_i, group, block = blocks
    scores = fitted[name].score(np.arange(train.shape[0]))
    assert block_auc(scores, train, held_u, held_i, group, block) > 0.8


def test_random_scores_fail_block_auc(blocks):
    """Sanity check of the AUC criterion itself: uninformative scores sit near 0.5."""
    train, held_u, held_i, group, block = blocks
    scores = np.random.default_rng(0).random(train.shape).astype(np.float32)
    assert block_auc(scores, train, held_u, held_i, group, block) < 0.65


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_training_loss_falls(fitted, name):
    hist = fitted[name].history
    assert len(hist) == 20
    assert all(np.isfinite(hist))
    assert hist[-1] < 0.8 * hist[0]
    assert hist[0] > 0.6  # starts near log(2) from the small random init
    assert not fitted[name].stopped_early


def test_lightgcn_embeddings_are_layer_mean_of_normalized_propagation(fitted, blocks):
    train = blocks[0]
    m = fitted["lightgcn"]
    n_users, n_items = train.shape
    A = np.zeros((n_users + n_items,) * 2)
    A[:n_users, n_users:] = train.toarray() > 0
    A[n_users:, :n_users] = A[:n_users, n_users:].T
    d = A.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-300)), 0)
    A_hat = inv[:, None] * A * inv[None, :]
    e = m.ego_embeddings.astype(np.float64)
    layers = [e]
    for _ in range(m.layers):
        layers.append(A_hat @ layers[-1])
    final = np.mean(layers, axis=0)
    np.testing.assert_allclose(m.user_embeddings, final[:n_users], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.item_embeddings, final[n_users:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.score([3])[0], final[3] @ final[n_users:].T, rtol=1e-4, atol=1e-4)


def test_time_budget_stops_early(blocks, caplog):
    train = blocks[0]
    with caplog.at_level(logging.INFO):
        m = B.LightGCN(dim=8, layers=1, epochs=50, batch_size=64, seed=0, time_budget_s=0.0).fit(train)
    assert m.stopped_early
    assert len(m.history) == 1
    assert m.score([0]).shape == (1, train.shape[1])
    assert any("epoch 1/50" in r.getMessage() and "loss" in r.getMessage() for r in caplog.records)


def test_popularity_orders_by_count():
    rng = np.random.default_rng(3)
    dense = (rng.random((50, 30)) < np.linspace(0.02, 0.9, 30)).astype(np.float32)
    dense[dense > 0] *= rng.integers(1, 5, size=int((dense > 0).sum()))  # weights must not change counts
    train = sp.csr_matrix(dense)
    counts = (dense > 0).sum(axis=0)
    s = B.Popularity().fit(train).score(np.array([0, 1, 2]))
    np.testing.assert_array_equal(s, np.tile(counts.astype(np.float32), (3, 1)))
    order = np.argsort(-s[0], kind="stable")
    assert np.all(np.diff(counts[order]) <= 0)
    # weighted variant sums the weights
    sw = B.Popularity(weighted=True).fit(train).score([0])[0]
    np.testing.assert_allclose(sw, dense.sum(axis=0))
    # per-group shares: same order inside each group, normalised to sum to 1 per group
    groups = np.arange(30) % 3
    sg = B.Popularity(group_of_item=groups).fit(train).score([0])[0]
    for g in range(3):
        idx = np.flatnonzero(groups == g)
        np.testing.assert_allclose(sg[idx], counts[idx] / counts[idx].sum(), rtol=1e-6)


def _gfcf_dense_reference(train: sp.csr_matrix, alpha: float, k: int) -> np.ndarray:
    R = train.toarray().astype(np.float64)
    du, di = R.sum(1), R.sum(0)
    inv_u = np.where(du > 0, 1 / np.sqrt(np.maximum(du, 1e-300)), 0)
    inv_i = np.where(di > 0, 1 / np.sqrt(np.maximum(di, 1e-300)), 0)
    Rn = inv_u[:, None] * R * inv_i[None, :]
    out = R @ (Rn.T @ Rn)
    if k:
        vt = np.linalg.svd(Rn, full_matrices=False)[2][:k]
        out += alpha * (R * inv_i[None, :]) @ vt.T @ vt * np.sqrt(di)[None, :]
    return out


@pytest.mark.parametrize("force_arpack", [False, True])
def test_item_filter_matches_dense_gfcf(monkeypatch, force_arpack):
    if force_arpack:
        monkeypatch.setattr(item_filter_module, "DENSE_SVD_MAX_SIDE", 0)
    train, *_ = planted_blocks(seed=1)
    train = train.copy()
    train.data = np.random.default_rng(0).integers(1, 4, size=train.nnz).astype(np.float32)  # weights
    k = 6
    # the top-k subspace must be well defined for the comparison to make sense
    s = np.linalg.svd(_normalized(train), compute_uv=False)
    assert s[k - 1] - s[k] > 1e-3
    ref = _gfcf_dense_reference(train, alpha=0.7, k=k)
    users = np.arange(train.shape[0])
    got = B.ItemItemFilter(alpha=0.7, k=k, batch_users=17).fit(train).score(users)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # the linear part alone (k=0) equals r_u R~^T R~
    lin = B.ItemItemFilter(alpha=0.7, k=0).fit(train).score(users)
    np.testing.assert_allclose(lin, _gfcf_dense_reference(train, 0.0, 0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(lin, got, atol=1e-3)


def _normalized(train: sp.csr_matrix) -> np.ndarray:
    R = train.toarray().astype(np.float64)
    return R / np.sqrt(R.sum(1))[:, None] / np.sqrt(np.maximum(R.sum(0), 1e-300))[None, :]


def test_item_filter_binarize():
    train, *_ = planted_blocks(seed=2)
    weighted = train.copy()
    weighted.data = weighted.data * 3.0
    a = B.ItemItemFilter(k=3, binarize=True).fit(weighted).score(np.arange(5))
    b = B.ItemItemFilter(k=3).fit(train).score(np.arange(5))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- link heuristics


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(7)
    n = 40
    upper = np.triu(rng.random((n, n)) < 0.15, k=1)
    dense = (upper | upper.T).astype(np.float32)
    neigh = [set(np.flatnonzero(dense[u])) for u in range(n)]
    return sp.csr_matrix(dense), neigh


def _brute_cn(neigh, u, v):
    return len(neigh[u] & neigh[v])


def _brute_aa(neigh, u, v):
    return sum(1.0 / np.log(len(neigh[z])) for z in neigh[u] & neigh[v] if len(neigh[z]) > 1)


def test_common_neighbours_and_adamic_adar_pairs(graph):
    adj, neigh = graph
    n = adj.shape[0]
    pairs = np.array([(u, v) for u in range(n) for v in range(n) if u != v])
    cn = B.common_neighbours(adj, pairs)
    aa = B.adamic_adar(adj, pairs)
    assert cn.shape == aa.shape == (len(pairs),)
    np.testing.assert_array_equal(cn, [_brute_cn(neigh, u, v) for u, v in pairs])
    np.testing.assert_allclose(aa, [_brute_aa(neigh, u, v) for u, v in pairs], rtol=1e-5)
    assert cn.max() >= 2 and aa.max() > 0  # the graph is not trivial
    # stored weights other than 1 are treated as plain edges
    weighted = adj.copy()
    weighted.data = weighted.data * 5.0
    np.testing.assert_array_equal(B.common_neighbours(weighted, pairs), cn)


def test_common_neighbours_and_adamic_adar_all(graph):
    adj, neigh = graph
    n = adj.shape[0]
    users = np.array([3, 0, 17, 39])
    cn_all = B.common_neighbours_all(adj, users)
    aa_all = B.adamic_adar_all(adj, users)
    assert cn_all.shape == aa_all.shape == (4, n)
    assert cn_all.dtype == aa_all.dtype == np.float32
    cn_ref = np.array([[_brute_cn(neigh, u, v) for v in range(n)] for u in users])
    aa_ref = np.array([[_brute_aa(neigh, u, v) for v in range(n)] for u in users])
    np.testing.assert_array_equal(cn_all, cn_ref)
    np.testing.assert_allclose(aa_all, aa_ref, rtol=1e-5, atol=1e-7)


def test_feature_cosine(graph):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(25, 6)).astype(np.float32)
    x[4] = 0.0  # zero-norm row scores 0
    pairs = rng.integers(0, 25, size=(60, 2))
    norm = np.linalg.norm(x.astype(np.float64), axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    ref_all = (x @ x.T) / safe[:, None] / safe[None, :]
    got = B.feature_cosine(x, pairs)
    assert got.shape == (60,) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_all[pairs[:, 0], pairs[:, 1]], rtol=1e-5, atol=1e-6)
    users = np.array([4, 0, 9])
    got_all = B.feature_cosine_all(x, users)
    assert got_all.shape == (3, 25) and got_all.dtype == np.float32
    np.testing.assert_allclose(got_all, ref_all[users], rtol=1e-5, atol=1e-6)
    assert np.all(got_all[0] == 0)
    np.testing.assert_allclose(np.diag(B.feature_cosine_all(x, np.arange(25)))[np.arange(25) != 4], 1.0, rtol=1e-5)
