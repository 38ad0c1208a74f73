"""People recommendation on a friend graph: the signals, the candidates and the re-ranker."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from recsys_core.datasets import load_lastfm
from recsys_core.datasets.base import carve_pairs
from recsys_core.realdata import friends as friend_model
from recsys_core.realdata.friends import FriendRanker, FriendSignals
from tests.test_benchmark_datasets import DATA


@pytest.fixture(scope="module")
def lastfm():
    return load_lastfm(DATA / "lastfm_slice")


def test_candidates_are_never_the_user_or_an_existing_friend(lastfm):
    signals = FriendSignals.build(lastfm.friends, lastfm.interactions)
    users = np.flatnonzero(np.diff(lastfm.friends.indptr) > 0)
    cand = signals.candidates(users, 30)
    for row, u in zip(cand, users, strict=True):
        assert u not in row
        assert not set(row) & set(lastfm.friends[u].indices)
    # PageRank of the walk from u: everyone two hops away gets some, nobody u cannot reach gets any
    u = users[0]
    _, component = connected_components(lastfm.friends, directed=False)
    two_hop = set((lastfm.friends @ lastfm.friends)[u].indices) - set(lastfm.friends[u].indices) - {u}
    ppr = signals.matrices["ppr_0.1"][u]
    unreachable = np.flatnonzero(component != component[u])
    assert two_hop and len(unreachable)
    assert ppr[list(two_hop)].min() > 1e-6 and np.abs(ppr[unreachable]).max() < 1e-12


def test_ranker_reorders_the_heuristics_candidates_and_is_deterministic(lastfm):
    known, held = carve_pairs(lastfm.friends, 0.2, seed=0)
    ranker = FriendRanker.fit(known, lastfm.interactions, seed=1)
    assert not ranker.heuristic_only and len(ranker.weights) == len(ranker.feature_names)
    assert np.abs(ranker.weights).max() > 0.05  # it learned something
    signals = FriendSignals.build(known, lastfm.interactions)
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    scores = ranker.score(signals, users)
    assert np.isneginf(scores[np.arange(len(users)), users]).all()  # never the user themself
    cand = signals.candidates(users, ranker.n_candidates)
    learned = np.argsort(-np.take_along_axis(scores, cand, 1), axis=1, kind="stable")[:, :10]
    heuristic = np.arange(10)[None, :].repeat(len(users), 0)  # the candidates come in heuristic order
    assert (learned != heuristic).any(axis=1).mean() > 0.5  # the re-ranker changes most users' top 10
    again = FriendRanker.fit(known, lastfm.interactions, seed=1)
    np.testing.assert_array_equal(again.weights, ranker.weights)


def test_graphs_too_large_for_dense_signals_are_refused(lastfm, monkeypatch):
    monkeypatch.setattr(friend_model, "DENSE_GRAPH_MAX_USERS", 100)
    with pytest.raises(ValueError, match="at most 100"):
        FriendSignals.build(lastfm.friends, lastfm.interactions)
