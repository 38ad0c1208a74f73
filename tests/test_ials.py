"""iALS: the conjugate-gradient sweep solves each row's least-squares system, and the bag ranks."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys_core.baselines.ials import BaggedALS, ImplicitALS, _cg_sweep
from recsys_core.baselines.popularity import Popularity
from recsys_core.datasets import carve_validation, load_lastfm
from recsys_core.evaluation.topk import ranking_metrics, top_k
from tests.test_benchmark_datasets import DATA


def test_cg_sweep_converges_to_the_exact_per_row_solution():
    rng = np.random.default_rng(0)
    conf = sp.random(40, 30, density=0.2, random_state=1, format="csr", dtype=np.float64)
    conf.data = 1 + 10 * conf.data
    y = rng.normal(size=(30, 6))
    reg = 2.0
    x = np.zeros((40, 6))
    _cg_sweep(x, y, conf, reg, steps=6)  # 6 unknowns per row: CG is exact after 6 steps
    for u in range(40):
        c = np.zeros(30)
        c[conf.indices[conf.indptr[u] : conf.indptr[u + 1]]] = conf.data[conf.indptr[u] : conf.indptr[u + 1]]
        p = (c > 0).astype(float)
        exact = np.linalg.solve(y.T @ (y * (1 + c)[:, None]) + reg * np.eye(6), y.T @ ((1 + c) * p))
        np.testing.assert_allclose(x[u], exact, rtol=1e-6, atol=1e-8)


def test_ials_bag_ranks_held_out_listens_better_than_popularity_and_is_seeded():
    ds = load_lastfm(DATA / "lastfm_slice")
    train, val = carve_validation(ds.binary(), 0.2, seed=0)
    counts = ds.counts_on(train)
    users = np.flatnonzero(np.diff(val.indptr) > 0)

    def recall(score) -> float:
        s = score(users)
        return ranking_metrics(top_k(lambda r: s[r], np.arange(len(users)), train[users], 20), val[users], 20)[
            "recall@20"
        ]

    bag = BaggedALS(seed=0).fit(counts)
    assert len(bag.fits) == 4
    assert recall(bag.score) > 3 * recall(Popularity().fit(train).score)
    again = ImplicitALS(seed=1000).fit(counts).score(users[:5])
    np.testing.assert_array_equal(again, bag.fits[0].score(users[:5]))
