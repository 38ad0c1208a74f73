"""The place model: its serving form equals its definition, its choices resist noise, it refits on every pair."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.baselines.ials import ImplicitALS
from recsys_core.baselines.item_filter import ItemItemFilter
from recsys_core.evaluation.split import split_indices
from recsys_core.graph import INTERACTS, build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.ranking.blend import PlaceBlend
from recsys_core.ranking.fit import (
    CHEBYCF_DEFAULT,
    GFCF_DEFAULT,
    PlaceModelSettings,
    choose_weights,
    filter_inputs,
    fit_place_model,
    measure_combinations,
    tune_filter,
)
from recsys_core.ranking.held_out import HeldOut, significantly_better
from recsys_core.ranking.parts import FactorPart, FilterPart
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import fit

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _counts(n_users=120, n_items=90, density=0.08, seed=1) -> sp.csr_matrix:
    m = sp.csr_matrix(sp.random(n_users, n_items, density=density, random_state=seed, dtype=np.float32))
    m.data[:] = np.random.default_rng(seed).integers(1, 6, m.nnz)
    return m


def _blend(counts: sp.csr_matrix, k: int = 16) -> PlaceBlend:
    rng = np.random.default_rng(0)
    als = [ImplicitALS(dim=8, seed=s).fit(counts) for s in (1, 2)]
    return PlaceBlend(
        {
            "graph_filter": [FilterPart.from_filter(ItemItemFilter(alpha=0.4, k=k).fit(counts))],
            "ials": [FactorPart(a.user_factors, a.item_factors) for a in als],
            "graphrec": [
                FactorPart(
                    rng.normal(size=(counts.shape[0], 6)).astype(np.float32),
                    rng.normal(size=(counts.shape[1], 6)).astype(np.float32),
                )
            ],
        },
        {"graph_filter": 1.0, "ials": 0.6, "graphrec": 0.3},
    )


def _served_scores(blend: PlaceBlend, rows: np.ndarray) -> np.ndarray:
    query, vectors = blend.queries(rows), blend.item_vectors()
    return np.vstack([query.scores(i, np.arange(blend.n_items), vectors) for i in range(len(rows))])


@pytest.mark.parametrize("k", [0, 16])
def test_the_serving_form_scores_exactly_what_the_definition_does(k):
    counts = _counts()
    blend = _blend(counts, k)
    rows = np.arange(0, counts.shape[0], 3)
    dense = blend.dense(rows)
    assert np.abs(_served_scores(blend, rows) - dense).max() < 1e-4 * max(np.abs(dense).max(), 1.0)
    # The filter part alone is GF-CF's score.
    fitted = ItemItemFilter(alpha=0.4, k=k).fit(counts)
    np.testing.assert_allclose(FilterPart.from_filter(fitted).dense(rows), fitted.score(rows), atol=1e-5)


def test_a_user_without_history_gets_finite_served_scores():
    counts = _counts()
    counts = sp.vstack([counts, sp.csr_matrix((1, counts.shape[1]), dtype=np.float32)]).tocsr()
    blend = _blend(counts)
    assert np.isfinite(_served_scores(blend, np.array([counts.shape[0] - 1]))).all()


def test_the_place_model_saves_and_loads_without_pickle(tmp_path):
    blend = _blend(_counts())
    blend.save(tmp_path)
    with np.load(tmp_path / "place_model.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)
    again = PlaceBlend.load(tmp_path)
    rows = np.arange(20)
    np.testing.assert_array_equal(again.dense(rows), blend.dense(rows))
    assert again.weights == blend.weights


def test_precomputed_statistics_serve_the_same_scores_and_survive_a_reload(tmp_path):
    counts = _counts()
    blend = _blend(counts)
    rows = np.arange(0, counts.shape[0], 5)
    before = _served_scores(blend, rows)
    blend.precompute_user_stats(block=7)  # blocks that do not divide the users
    stats = [part.stats for _, _, part in blend.active()]
    assert all(s is not None for s in stats)
    np.testing.assert_allclose(_served_scores(blend, rows), before, rtol=1e-5, atol=1e-5)
    blend.save(tmp_path)
    again = PlaceBlend.load(tmp_path)
    for (_, _, part), saved in zip(again.active(), stats, strict=True):
        np.testing.assert_array_equal(part.stats.std, saved.std)
    np.testing.assert_allclose(_served_scores(again, rows), before, rtol=1e-5, atol=1e-5)


def test_a_blend_without_a_positive_weight_is_refused():
    with pytest.raises(ValueError, match="positive weight"):
        PlaceBlend({"ials": [FactorPart(np.ones((2, 2)), np.ones((3, 2)))]}, {"ials": 0.0})


def _held_out(counts: sp.csr_matrix, seed: int = 0) -> tuple[sp.csr_matrix, HeldOut]:
    """Train / held-out carve of `counts` (one held pair per user with three or more)."""
    rng = np.random.default_rng(seed)
    kept, held = counts.tolil(copy=True), sp.lil_matrix(counts.shape, dtype=np.float32)
    for u in range(counts.shape[0]):
        items = counts[u].indices
        if len(items) >= 3:
            i = rng.choice(items)
            kept[u, i], held[u, i] = 0, 1
    train = sp.csr_matrix(kept)
    train.eliminate_zeros()
    cities = np.zeros(counts.shape[0], np.int64), np.zeros(counts.shape[1], np.int64)
    return train, HeldOut(train, sp.csr_matrix(held), *cities, max_users=10_000, seed=0)


def test_noise_gets_no_weight_and_a_useful_part_does():
    counts = _counts(300, 150, 0.06)
    train, val = _held_out(counts)
    truth = val.truth.toarray()
    rng = np.random.default_rng(3)
    informative = truth + 0.3 * rng.normal(size=truth.shape)  # knows the held-out pairs
    weak = truth + 3.0 * rng.normal(size=truth.shape)
    noise = rng.normal(size=truth.shape)
    zscores = {"graph_filter": weak, "ials": informative, "graphrec": noise}
    weights, combinations = choose_weights(zscores, val)
    assert weights["ials"] == 1.0 and weights["graphrec"] == 0.0
    assert set(combinations) == {
        "graph_filter",
        "ials",
        "graphrec",
        "graph_filter + ials",
        "graph_filter + graphrec",
        "ials + graphrec",
        "blend",
    }
    report = measure_combinations(combinations, zscores, val)
    assert report["blend"]["weights"] == {g: w for g, w in weights.items() if w > 0}
    assert report["blend"]["recall@20"] >= report["ials"]["recall@20"] > report["graphrec"]["recall@20"]


def test_significance_needs_a_gain_beyond_noise():
    rng = np.random.default_rng(0)
    base = rng.random(2000)
    assert significantly_better(base + 0.05, base)
    assert not significantly_better(base + 0.002 + rng.normal(0, 0.3, 2000), base)  # gain 0.002, standard error 0.007
    assert not significantly_better(base, base)


def test_the_filter_keeps_gfcf_defaults_unless_a_sweep_is_clearly_better():
    counts = _counts(400, 300, 0.04)
    train, val = _held_out(counts)
    inputs = filter_inputs(train)
    assert set(inputs) == {"binary", "relative counts"}  # counts vary
    part, chosen, report = tune_filter(inputs, val, PlaceModelSettings(filter_k=64))
    best, default = report["best_on_validation"], report["default"]
    gfcf = {"input": GFCF_DEFAULT.input, "k": 64, "alpha": GFCF_DEFAULT.alpha, "shape": "gfcf"}
    chebycf = {**CHEBYCF_DEFAULT._asdict(), "k": 64}
    assert default in (gfcf, chebycf)  # the better of the published settings on validation
    published = report["published"]
    assert set(published) == {"gfcf binary k=64 alpha=0.3", "chebycf binary k=64 alpha=0.2"}
    assert published[f"{default['shape']} binary k=64 alpha={default['alpha']}"] == max(published.values())
    assert chosen._asdict() in (default, best)
    sweep = report["validation_recall_by_setting"]
    assert any("chebycf k=64 alpha=0.2" in label for label in sweep) and any("chebycf k=32" in label for label in sweep)
    assert part.low_left.shape[1] == chosen.k == report["k"]
    assert part.alpha == (chosen.alpha if chosen.shape == "gfcf" else 1.0)  # ChebyCF's weights sit in its factors
    assert (part.spread is not None) == (chosen.shape == "chebycf")
    ones = train.copy()
    ones.data[:] = 1.0
    assert set(filter_inputs(ones)) == {"binary"}


@pytest.fixture(scope="module")
def fitted_world(world):
    bundle = build_from_world(world)
    split = split_indices(bundle, seed=0)
    trained = fit(
        bundle,
        ModelConfig(d_model=32, head_hidden=(64, 32), d_ctx=8),
        TrainConfig(max_steps=10, eval_every=5, batch_size=2048, city_pool=128, in_batch_negatives=256, head_batch=512),
        split=split,
    )
    return bundle, split, fit_place_model(bundle, split, trained.model, PlaceModelSettings(ials_budget_s=2.0))


def test_the_served_model_is_refit_on_every_pair_and_the_selected_one_on_training_pairs(fitted_world):
    bundle, split, place_model = fitted_world
    n_pairs = bundle.data[INTERACTS].edge_index.shape[1]
    for blend, pairs in ((place_model.served, n_pairs), (place_model.selected, len(split.train_edges))):
        if blend.weights["graph_filter"] > 0:
            assert blend.groups["graph_filter"][0].weights.nnz == pairs
    assert place_model.served.weights == place_model.selected.weights
    for part in ("validation", "test"):
        report = place_model.report[part]
        assert {"graph_filter", "ials", "graphrec", "blend"} <= set(report)
        assert sum(" + " in label for label in report) == 3  # each pair
        assert all(0.0 <= r["recall@20"] <= 1.0 for r in report.values())
    best_alone = max(place_model.report["validation"][g]["recall@20"] for g in ("graph_filter", "ials", "graphrec"))
    assert place_model.report["validation"]["blend"]["recall@20"] >= best_alone


def test_the_served_ranking_agrees_with_the_definition_and_a_broken_index_shows():
    from recsys_core.ranking.served import served_agreement
    from recsys_core.retrieval.index import build_city_index

    counts = _counts(200, 150, 0.06)
    blend = _blend(counts)
    place_ids = np.arange(1000, 1000 + counts.shape[1])
    everywhere = np.arange(counts.shape[1])
    users = np.arange(0, 200, 4)
    exact = build_city_index(place_ids, blend.item_vectors())
    assert served_agreement(blend, exact, place_ids, everywhere, users) == 1.0
    no_filter = PlaceBlend(blend.groups, {**blend.weights, "graph_filter": 0.0})  # no sparse candidates either
    half = build_city_index(place_ids[::2], no_filter.item_vectors()[::2])  # half the places missing
    assert served_agreement(no_filter, half, place_ids, everywhere, users) < 0.9
