"""People recommendation on a friend graph: the signals, the candidates, the re-ranker, the people model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from recsys_core.datasets import load_lastfm
from recsys_core.datasets.base import carve_pairs
from recsys_core.ranking import people_signals
from recsys_core.ranking.people import FriendRanker, PeopleModel, measure
from recsys_core.ranking.people_signals import FriendGraph, candidates, heuristic
from tests.test_benchmark_datasets import DATA


@pytest.fixture(scope="module")
def lastfm():
    return load_lastfm(DATA / "lastfm_slice")


def test_candidates_are_never_the_user_or_an_existing_friend(lastfm):
    graph = FriendGraph(lastfm.friends, lastfm.interactions)
    users = np.flatnonzero(np.diff(lastfm.friends.indptr) > 0)
    rows = graph.rows(users)
    cand = candidates(graph, users, heuristic(rows), 30)
    for row, u in zip(cand, users, strict=True):
        assert u not in row
        assert not set(row) & set(lastfm.friends[u].indices)
    # PageRank of the walk from u: everyone two hops away gets some, nobody u cannot reach gets any
    u = users[0]
    _, component = connected_components(lastfm.friends, directed=False)
    two_hop = set((lastfm.friends @ lastfm.friends)[u].indices) - set(lastfm.friends[u].indices) - {u}
    ppr = rows["ppr_0.1"][0]
    unreachable = np.flatnonzero(component != component[u])
    assert two_hop and len(unreachable)
    assert ppr[list(two_hop)].min() > 1e-6 and np.abs(ppr[unreachable]).max() < 1e-12


def test_large_graphs_walk_a_cut_series_close_to_the_exact_pagerank(lastfm, monkeypatch):
    exact = FriendGraph(lastfm.friends, lastfm.interactions)
    monkeypatch.setattr(people_signals, "EXACT_MAX_USERS", 10)
    cut = FriendGraph(lastfm.friends, lastfm.interactions)
    assert cut.exact_ppr == {} and exact.exact_ppr
    users = np.arange(0, exact.n, 7)
    a, b = exact.rows(users), cut.rows(users)
    assert set(a) == set(b)
    for name in a:
        if name.startswith("ppr"):  # the tail past 30 steps weighs (1 - restart)^30
            assert np.abs(a[name] - b[name]).max() < 0.25 * np.abs(a[name]).max()
        else:
            np.testing.assert_allclose(a[name], b[name], atol=1e-9)


@pytest.fixture(scope="module")
def social_world(world):
    """The small synthetic world's social graph and interactions (where the re-ranker has signal to learn)."""
    from recsys_core.graph import SOCIAL, build_from_world
    from recsys_core.ranking.fit import interaction_matrices
    from recsys_core.ranking.people import adjacency

    bundle = build_from_world(world)
    n = int(bundle.data["user"].num_nodes)
    _, counts = interaction_matrices(bundle, np.arange(bundle.data["user", "interacts", "place"].edge_index.shape[1]))
    return adjacency(bundle.data[SOCIAL].edge_index.numpy(), n), counts


def test_ranker_reorders_the_heuristics_candidates_and_is_deterministic(social_world):
    friends, interactions = social_world
    known, held = carve_pairs(friends, 0.2, seed=0)
    ranker = FriendRanker.fit(known, interactions, seed=1)
    assert not ranker.heuristic_only and len(ranker.weights) == len(ranker.feature_names)
    assert np.abs(ranker.weights).max() > 0.05  # it learned something
    graph = FriendGraph(known, interactions)
    users = np.flatnonzero(np.diff(held.indptr) > 0)[:200]
    top, logits = ranker.rank(graph, users, 10)
    assert not (top == users[:, None]).any()  # never the user themself
    assert (np.diff(logits, axis=1) <= 0).all()  # best first
    by_heuristic = candidates(graph, users, heuristic(graph.rows(users)), 10)
    assert (top != by_heuristic).any(axis=1).mean() > 0.5  # the re-ranker changes most users' top 10
    again = FriendRanker.fit(known, interactions, seed=1)
    np.testing.assert_array_equal(again.weights, ranker.weights)


def test_a_re_ranker_no_better_than_the_heuristic_out_of_fold_is_not_used(lastfm):
    """On the small LastFM slice the learned order does not beat the heuristic's on held-out users."""
    known, held = carve_pairs(lastfm.friends, 0.2, seed=0)
    ranker = FriendRanker.fit(known, lastfm.interactions, seed=1)
    assert ranker.heuristic_only
    graph = FriendGraph(known, lastfm.interactions)
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    top, _ = ranker.rank(graph, users, 10)
    np.testing.assert_array_equal(top, candidates(graph, users, heuristic(graph.rows(users)), 10))


def test_the_people_model_beats_its_heuristic_on_hidden_friendships_and_round_trips(lastfm, tmp_path):
    known, held = carve_pairs(lastfm.friends, 0.2, seed=3)
    model = PeopleModel.build(known, lastfm.interactions, seed=0)
    n = lastfm.friends.shape[0]
    assert model.candidates.shape[0] == n and (model.candidates < n).all()
    for u in range(0, n, 11):
        chosen, _ = model.of(u)
        assert u not in chosen and not set(chosen) & set(known[u].indices)
    ranker = FriendRanker.fit(known, lastfm.interactions, seed=0)
    figures = measure(ranker, FriendGraph(known, lastfm.interactions), held)
    assert figures["people model"]["recall@20"] > figures["adamic_adar"]["recall@20"]
    assert figures["people model"]["recall@20"] >= figures["heuristic"]["recall@20"] - 1e-9
    model.save(tmp_path)
    again = PeopleModel.load(tmp_path)
    np.testing.assert_array_equal(again.candidates, model.candidates)
    np.testing.assert_array_equal(again.logits, model.logits)
