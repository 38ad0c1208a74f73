"""The evaluation protocol on hand-made truths and scorers, and the full comparison table end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_core.evaluation import compare as cmp
from recsys_core.evaluation import protocol
from recsys_core.evaluation.protocol import PlaceTruth, evaluate_friends, evaluate_places
from recsys_core.evaluation.split import split_indices, training_graph
from recsys_core.graph import INTERACTS, build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import fit
from recsys_core.training.validation import validation_recall

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


# --------------------------------------------------------------------------- a hand-built truth
#
# Two cities of 30 places: 0..29 in city 0, 30..59 in city 1. Users 0-3 live in city 0, 4-6 in city 1.
# User i has i + 1 training places; every user but 3 has two held-out places in their city, and user 0
# also one in the other city (a trip: not a candidate of their home-city ranking).
# History tiers (metrics.HISTORY_TIERS) are tested with TIER_COUNTS in place of the counts 1..7: tested
# users 0, 1, 2, 4, 5, 6 fall in zero {0}, cold {1, 2}, warm {4}, hot {5, 6}.

USER_CITY = np.array([0, 0, 0, 0, 1, 1, 1])
PLACE_CITY = np.repeat([0, 1], 30)
SEEN = {u: [30 * USER_CITY[u] + 2 * j + 1 for j in range(u + 1)] for u in range(7)}  # odd places
HELD = {0: [4, 10, 40], 1: [0, 28], 2: [6, 8], 4: [30, 32], 5: [44, 58], 6: [36, 50]}  # even places
TESTED = {0: [0, 1, 2], 1: [4, 5, 6]}
TIER_COUNTS = np.array([0, 3, 5, 8, 12, 25, 40])
TIERS = ("all", "zero", "cold", "warm", "hot", "new_places")


def hand_truth(place_features: np.ndarray | None = None) -> PlaceTruth:
    seen = [(u, p) for u, ps in SEEN.items() for p in ps]
    held = [(u, p) for u, ps in HELD.items() for p in ps]
    return PlaceTruth(
        users=np.arange(7),
        places=np.arange(60),
        user_city=USER_CITY,
        place_city=PLACE_CITY,
        seen_user=np.array([u for u, _ in seen]),
        seen_place=np.array([p for _, p in seen]),
        held_user=np.array([u for u, _ in held]),
        held_place=np.array([p for _, p in held]),
        train_counts=np.array([len(SEEN[u]) for u in range(7)]),
        place_popularity=np.bincount([p for _, p in seen], minlength=60).astype(np.float64),
        place_features=place_features,
    )


def scorer(held_bonus: float = 10.0, seen_bonus: float = 0.0, calls: list | None = None, held_sign=None):
    """Scores = held_bonus for held-out places (or held_sign(u, p) * held_bonus), seen_bonus for training
    places, and a small decreasing tie-breaker by place index otherwise."""

    def score(city, users, places):
        if calls is not None:
            calls.append((city, users.tolist(), places.tolist()))
        s = -0.001 * places[None, :].astype(np.float64).repeat(len(users), 0)
        for row, u in enumerate(users):
            for col, p in enumerate(places):
                if p in HELD.get(int(u), []):
                    s[row, col] += held_bonus * (held_sign(u, p) if held_sign else 1.0)
                if p in SEEN[int(u)]:
                    s[row, col] += seen_bonus
        return s

    return score


def rows(table, model: str) -> dict[str, dict]:
    return {r["tier"]: r for r in table[table["model"] == model].to_dict("records")}


def test_blocks_are_the_tested_users_of_each_city_against_all_its_places():
    calls = []
    evaluate_places({"perfect": scorer(calls=calls)}, hand_truth())
    assert [(c, u) for c, u, _ in calls] == [(0, TESTED[0]), (1, TESTED[1])]
    assert calls[0][2] == list(range(30)) and calls[1][2] == list(range(30, 60))


def test_a_big_city_is_scored_in_blocks_of_users_with_the_same_figures(monkeypatch):
    """A one-city world of 30k users x 40k places must not be one 10 GB score matrix: a city's users
    come in blocks of at most BLOCK_CELLS scores, and the figures do not change."""
    truth = hand_truth(np.random.default_rng(0).random((60, 100)))
    whole = evaluate_places({"perfect": scorer(10.0), "half": scorer(-10.0)}, truth)
    monkeypatch.setattr(protocol, "BLOCK_CELLS", 60)  # two users of a 30-place city per block
    calls = []
    blocked = evaluate_places({"perfect": scorer(10.0, calls=calls), "half": scorer(-10.0)}, truth)
    assert [(c, u) for c, u, _ in calls] == [(0, [0, 1]), (0, [2]), (1, [4, 5]), (1, [6])]
    pd.testing.assert_frame_equal(whole, blocked)


def test_perfect_scorer_gets_full_recall_and_a_reversed_one_gets_none():
    first_held_only = scorer(held_sign=lambda u, p: 1.0 if p == HELD[int(u)][0] else -1.0)
    table = evaluate_places(
        {"perfect": scorer(10.0), "reversed": scorer(-10.0), "half": first_held_only},
        hand_truth(np.random.default_rng(0).random((60, 100))),
    )
    perfect, reversed_, half = rows(table, "perfect")["all"], rows(table, "reversed")["all"], rows(table, "half")["all"]
    for metric in ("recall@5", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit@20"):
        assert perfect[metric] == pytest.approx(1.0), metric
    # the trip place of user 0 is not a candidate and does not count against their recall
    assert perfect["precision@5"] == pytest.approx(2 / 5)
    # held-out places last among >= 23 candidates: outside every top 20
    assert reversed_["recall@20"] == 0.0 and reversed_["hit@20"] == 0.0
    assert 0.0 < reversed_["mrr"] < 0.1
    # one of the two held-out places first, the other last
    assert half["recall@20"] == pytest.approx(0.5)
    assert half["mrr"] == pytest.approx(1.0)
    assert half["recall@20"] < perfect["recall@20"] and reversed_["recall@20"] < half["recall@20"]
    for r in (perfect, reversed_, half):
        assert 0.0 < r["coverage@20"] <= 1.0 and np.isfinite(r["novelty@20"]) and np.isfinite(r["diversity@20"])


def test_training_places_are_excluded_from_the_ranking():
    """A scorer that puts every training place first still ranks the held-out places first."""
    table = evaluate_places({"train_first": scorer(10.0, seen_bonus=100.0)}, hand_truth())
    row = rows(table, "train_first")["all"]
    assert row["recall@5"] == pytest.approx(1.0)
    assert row["mrr"] == pytest.approx(1.0)
    # ... while a scorer that ranks training places above everything *else* loses nothing either
    table = evaluate_places({"seen_only": scorer(0.0, seen_bonus=100.0)}, hand_truth())
    assert rows(table, "seen_only")["all"]["recall@5"] < 1.0


def test_tier_rows_exist_with_the_right_user_counts():
    truth = dataclasses.replace(hand_truth(), train_counts=TIER_COUNTS)
    table = evaluate_places({"perfect": scorer(10.0), "reversed": scorer(-10.0)}, truth)
    assert len(table) == 2 * len(TIERS)
    for model in ("perfect", "reversed"):
        by_tier = rows(table, model)
        assert set(by_tier) == set(TIERS)
        users = {t: by_tier[t]["users"] for t in by_tier if t != "new_places"}
        assert users == {"all": 6, "zero": 1, "cold": 2, "warm": 1, "hot": 2}
        # beyond-accuracy metrics are reported once, on the "all" row
        assert np.isfinite(by_tier["all"]["coverage@20"])
        assert all(np.isnan(by_tier[t].get("coverage@20", np.nan)) for t in TIERS[1:])
    # a model good on the users with least history only shows it in their rows
    good_for_few = scorer(held_sign=lambda u, p: 1.0 if u in (0, 1, 2) else -1.0)
    by_tier = rows(evaluate_places({"m": good_for_few}, truth), "m")
    assert by_tier["zero"]["recall@20"] == pytest.approx(1.0) and by_tier["cold"]["recall@20"] == pytest.approx(1.0)
    assert by_tier["warm"]["recall@20"] == 0.0 and by_tier["hot"]["recall@20"] == 0.0
    assert by_tier["all"]["recall@20"] == pytest.approx(0.5)


def test_held_out_pairs_at_new_places_get_a_row_of_their_own():
    """Places 4 and 30 have no training pair: only users 0 and 4 hold one out there."""
    popularity = np.ones(60)
    popularity[[4, 30]] = 0.0
    truth = dataclasses.replace(hand_truth(), place_popularity=popularity)
    misses_new = scorer(held_sign=lambda u, p: -1.0 if p in (4, 30) else 1.0)
    table = evaluate_places({"perfect": scorer(10.0), "misses_new": misses_new}, truth)
    perfect, misses = rows(table, "perfect"), rows(table, "misses_new")
    assert perfect["new_places"]["users"] == misses["new_places"]["users"] == 2
    assert perfect["new_places"]["recall@20"] == pytest.approx(1.0)
    assert misses["new_places"]["recall@20"] == 0.0 and misses["all"]["recall@20"] > 0.5


def test_small_catalogues_are_evaluated():
    truth = PlaceTruth(
        users=np.arange(2),
        places=np.arange(8),
        user_city=np.zeros(2, int),
        place_city=np.zeros(8, int),
        seen_user=np.array([0, 1]),
        seen_place=np.array([0, 1]),
        held_user=np.array([0, 1]),
        held_place=np.array([2, 3]),
        train_counts=np.array([1, 1]),
        place_popularity=np.ones(8),
        place_features=None,
    )
    held = {0: 2, 1: 3}
    table = evaluate_places(
        {"perfect": lambda c, u, p: np.array([[float(q == held[int(x)]) for q in p] for x in u])}, truth
    )
    assert rows(table, "perfect")["all"]["recall@5"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- friends


def test_evaluate_friends_on_hand_examples():
    compat = np.array([1, 1, 1, 0, 0])
    attend = np.array([1, 0, 1, 0, 0])
    table = evaluate_friends(
        {
            "perfect": np.array([0.9, 0.8, 0.7, 0.1, 0.2]),
            "two_columns": np.array([[0.1, 5.0], [0.2, 0.0], [0.3, 4.0], [0.9, 9.0], [0.8, 9.0]]),
            "mixed": np.array([0.9, 0.1, 0.5, 0.6, 0.2]),
            "constant": np.full(5, 0.5),
        },
        compat,
        attend,
    ).set_index("model")
    assert table.loc["perfect", "compat_roc_auc"] == pytest.approx(1.0)
    assert table.loc["perfect", "compat_pr_auc"] == pytest.approx(1.0)
    # attendance among the compatible pairs (0, 1, 2): scores 0.9, 0.8, 0.7 with labels 1, 0, 1
    assert table.loc["perfect", "attend_auc_among_compatible"] == pytest.approx(0.5)
    # (n, 2) scores: first column compatibility (reversed here), second attendance (perfect here)
    assert table.loc["two_columns", "compat_roc_auc"] == pytest.approx(0.0)
    assert table.loc["two_columns", "attend_auc_among_compatible"] == pytest.approx(1.0)
    # positives 0.9, 0.1, 0.5 vs negatives 0.6, 0.2: 3 of 6 pairs ordered; AP = (1 + 2/3 + 3/5) / 3
    assert table.loc["mixed", "compat_roc_auc"] == pytest.approx(0.5)
    assert table.loc["mixed", "compat_pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert table.loc["constant", "compat_roc_auc"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- the comparison, end to end


@pytest.fixture(scope="module")
def bundle(world):
    return build_from_world(world)


@pytest.fixture(scope="module")
def split(bundle):
    return split_indices(bundle, seed=0)


@pytest.fixture(scope="module")
def trained_model(bundle, split):
    config = TrainConfig(
        max_steps=15, eval_every=5, batch_size=2048, city_pool=128, in_batch_negatives=256, head_batch=512
    )
    return fit(bundle, ModelConfig(d_model=32, head_hidden=(64, 32), d_ctx=8), config, split=split).model


@pytest.fixture(scope="module")
def comparison(world, bundle, split, trained_model):
    truth = cmp.WorldTruth(users=world["users"], places=world["places"], interactions=world["interactions"])
    return cmp.compare(bundle, split, {"graphrec": trained_model}, world=truth, baseline_budget_s=3.0)


def test_place_truth_for_the_test_part_excludes_training_and_validation_pairs(bundle, split):
    ei = bundle.data[INTERACTS].edge_index.numpy()
    city = np.zeros(int(bundle.data["user"].num_nodes), int), np.zeros(int(bundle.data["place"].num_nodes), int)
    test = PlaceTruth.from_split(bundle, split, "test", *city)
    val = PlaceTruth.from_split(bundle, split, "val", *city)
    seen_for_test = np.concatenate([split.train_edges, split.val_edges])
    assert np.array_equal(test.seen_user, ei[0, seen_for_test]) and np.array_equal(
        test.seen_place, ei[1, seen_for_test]
    )
    assert np.array_equal(test.held_place, ei[1, split.test_edges])
    assert np.array_equal(val.seen_place, ei[1, split.train_edges]) and np.array_equal(
        val.held_place, ei[1, split.val_edges]
    )
    for truth in (test, val):  # tiers and popularity come from training pairs only
        assert truth.train_counts.sum() == len(split.train_edges)
        assert truth.place_popularity.sum() == len(split.train_edges)


def test_many_tested_users_are_sampled_the_same_way_for_every_model(bundle, split):
    ei = bundle.data[INTERACTS].edge_index.numpy()
    city = np.zeros(int(bundle.data["user"].num_nodes), int), np.zeros(int(bundle.data["place"].num_nodes), int)
    whole = PlaceTruth.from_split(bundle, split, "val", *city)
    sampled = PlaceTruth.from_split(bundle, split, "val", *city, max_users=50)
    again = PlaceTruth.from_split(bundle, split, "val", *city, max_users=50)
    users = np.unique(sampled.held_user)
    assert len(users) == 50 and set(users) <= set(whole.held_user)
    assert np.array_equal(sampled.held_user, again.held_user)  # seeded: every model meets the same users
    # a sampled user keeps every held-out pair; training pairs are all still excluded
    mask = np.isin(ei[0, split.val_edges], users)
    assert np.array_equal(sampled.held_place, ei[1, split.val_edges][mask])
    assert np.array_equal(sampled.seen_place, whole.seen_place)


def test_compare_reports_every_model_for_both_parts(comparison):
    places = comparison.places
    expected = {"graphrec", "popularity", "mf_bpr", "lightgcn", "item_item_filter", "ials", "oracle"}
    for part in ("val", "test"):
        in_part = places[places["part"] == part]
        assert set(in_part["model"]) == expected
        assert len(in_part) == len(TIERS) * len(expected)
        for model in expected:
            assert set(in_part.loc[in_part["model"] == model, "tier"]) == set(TIERS)
            recall = comparison.place_metric(part, model)
            assert 0.0 <= recall <= 1.0, (part, model)
        assert comparison.place_metric(part, "oracle") > comparison.place_metric(part, "popularity")
    assert set(comparison.friends["part"]) == {"val", "test"}
    friends = comparison.friends[comparison.friends["part"] == "test"]
    assert {"graphrec", "common_neighbours", "adamic_adar", "feature_cosine", "oracle"} <= set(friends["model"])
    # the generator's own compatibility rule reproduces the labels exactly
    assert comparison.friend_metric("test", "oracle") == pytest.approx(1.0)
    assert 0.0 <= comparison.friend_metric("test", "graphrec") <= 1.0


def test_compare_scores_graphrec_like_the_trainers_validation(bundle, split, trained_model, comparison):
    """Two implementations of the same served-order Recall@20 on validation pairs must agree."""
    inputs = GraphInputs.from_hetero(training_graph(bundle, split))
    val_users = np.unique(bundle.data[INTERACTS].edge_index[0, torch.from_numpy(split.val_edges)].numpy())
    try:
        recall = validation_recall(trained_model, inputs, bundle, split, val_users, rerank_depth=200)
    finally:
        trained_model.eval()
    assert comparison.place_metric("val", "graphrec") == pytest.approx(recall, abs=1e-9)


def _comparison(recall: dict[str, float], auc: dict[str, float]):
    import pandas as pd

    from recsys_core.evaluation.compare import Comparison

    places = pd.DataFrame([{"part": "val", "model": m, "tier": "all", "recall@20": r} for m, r in recall.items()])
    friends = pd.DataFrame([{"part": "val", "model": m, "compat_roc_auc": a} for m, a in auc.items()])
    return Comparison(places=places, friends=friends)


@pytest.mark.parametrize("people_recall, passes", [(0.40, True), (0.34, False)])
def test_on_friendship_data_the_gate_judges_the_served_people_order(people_recall, passes):
    from recsys_core.evaluation.compare import people_table, quality_gate

    comparison = _comparison(
        {"place_model": 0.30, "popularity": 0.10, "mf_bpr": 0.20},
        {"graphrec": 0.50, "common_neighbours": 0.90},  # the friend-head AUC alone would fail the gate
    )
    heuristics = {"common_neighbours": 0.30, "adamic_adar": 0.32, "ppr_0.1": 0.35, "katz": 0.90}
    comparison.people = people_table(
        {
            "validation": {
                "people model": {"recall@20": people_recall, "ndcg@20": 0.2},
                **{name: {"recall@20": r, "ndcg@20": 0.1} for name, r in heuristics.items()},
            },
            "test": {"people model": {"recall@20": 0.0, "ndcg@20": 0.0}},
        }
    )
    passed, figures = quality_gate(comparison)
    assert passed is passes
    assert figures["val_people_recall@20"] == people_recall
    assert figures["val_people_recall@20_best_heuristic"] == 0.35  # Katz is not among those it must beat
    assert comparison.people_metric("test", "people model") == 0.0


@pytest.mark.parametrize(
    "graphrec_recall, graphrec_auc, passes",
    [(0.30, 0.99, True), (0.21, 0.99, False), (0.30, 0.95, False)],
)
def test_quality_gate_requires_a_margin_over_baselines_and_heuristics(graphrec_recall, graphrec_auc, passes):
    from recsys_core.evaluation.compare import quality_gate

    comparison = _comparison(
        {"graphrec": graphrec_recall, "popularity": 0.10, "mf_bpr": 0.20},
        {"graphrec": graphrec_auc, "common_neighbours": 0.90, "adamic_adar": 0.91, "feature_cosine": 0.97},
    )
    passed, figures = quality_gate(comparison)
    assert passed is passes
    assert figures["val_recall@20_required"] == pytest.approx(0.21)
