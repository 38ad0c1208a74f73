"""The gate against the served version: judged on held-out pairs the served version never saw, with
what it saw excluded from both rankings, and failing only a model significantly worse."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from dagster import AssetKey

from recsys_assets.io_manager import load_latest
from recsys_core.graph import INTERACTS
from recsys_core.ranking.versus_served import MIN_PAIRS, compare_with_served


@pytest.fixture(scope="module")
def trained(materialized_world):
    model = load_latest(materialized_world.instance, AssetKey("trained_model"), [None])
    graph = load_latest(materialized_world.instance, AssetKey("hetero_graph"), [None])
    return model, graph


def _trained_on_training_pairs(graph, split):
    """The graph as a version trained on the split's training pairs alone would have had it."""
    older = copy.deepcopy(graph)
    older.data[INTERACTS].edge_index = graph.data[INTERACTS].edge_index[:, split.train_edges]
    return older


class Reversed:
    """The selected blend's order turned upside down: a model far worse than any served one."""

    def __init__(self, blend):
        self.blend, self.n_users, self.n_items = blend, blend.n_users, blend.n_items

    def dense(self, rows: np.ndarray) -> np.ndarray:
        return -self.blend.dense(rows)


def test_pairs_the_served_version_was_refit_on_are_not_judged(trained):
    model, graph = trained
    place = model.place_model
    result = compare_with_served(graph, model.split, place.selected, place.served, graph)
    assert result.passed and result.pairs == 0 and "0 held-out pairs the served version has not seen" in result.reason


def test_the_same_model_ties_and_a_far_worse_one_fails(trained):
    model, graph = trained
    selected, older = model.place_model.selected, _trained_on_training_pairs(graph, model.split)
    same = compare_with_served(graph, model.split, selected, selected, older)
    assert same.passed and same.pairs >= MIN_PAIRS and same.difference == 0.0 and same.served_recall > 0
    worse = compare_with_served(graph, model.split, Reversed(selected), selected, older)
    assert not worse.passed and worse.difference < -2 * worse.standard_error, worse.reason
    assert "worse by more than 2 standard errors" in worse.reason
    better = compare_with_served(graph, model.split, selected, Reversed(selected), older)
    assert better.passed and better.difference > 0


def test_users_the_served_version_lacks_are_left_out(trained):
    model, graph = trained
    selected, older = model.place_model.selected, _trained_on_training_pairs(graph, model.split)
    everyone = compare_with_served(graph, model.split, selected, selected, older)
    fewer = copy.deepcopy(older)
    users = fewer.data["user"].node_id
    fewer.data["user"].node_id = users + 10**9  # none of today's users existed then
    none = compare_with_served(graph, model.split, selected, selected, fewer)
    assert none.passed and none.pairs == 0 and everyone.pairs > 0


class Exposed:
    """A served version whose visits came from its own impressions: the pairs it showed rank first."""

    def __init__(self, blend, users: np.ndarray, places: np.ndarray):
        self.blend, self.n_users, self.n_items = blend, blend.n_users, blend.n_items
        self.boost = np.zeros((blend.n_users, blend.n_items), np.float32)
        self.boost[users, places] = 1e6

    def dense(self, rows: np.ndarray) -> np.ndarray:
        return self.blend.dense(rows) + self.boost[rows]


def test_pairs_a_served_version_showed_are_not_judged(trained):
    """The loop's trap: held-out visits that followed the served version's impressions make it look far
    better than any retrain. Left out of both rankings and the count, the same model ties again."""
    from recsys_core.evaluation import protocol
    from recsys_core.ranking.versus_served import _cities

    model, graph = trained
    selected, older = model.place_model.selected, _trained_on_training_pairs(graph, model.split)
    truth = protocol.PlaceTruth.from_split(graph, model.split, "test", _cities(graph, "user"), _cities(graph, "place"))
    half = slice(0, len(truth.held_user) // 2)
    served = Exposed(selected, truth.held_user[half], truth.held_place[half])  # graph and older share node order
    users, places = graph.data["user"].node_id.numpy(), graph.data["place"].node_id.numpy()
    shown = (users[truth.held_user[half]], places[truth.held_place[half]])

    fooled = compare_with_served(graph, model.split, selected, served, older)
    assert not fooled.passed and fooled.served_recall > fooled.candidate_recall, fooled.reason
    fair = compare_with_served(graph, model.split, selected, served, older, shown=shown)
    assert fair.passed and fair.difference == 0.0 and 0 < fair.pairs < fooled.pairs, fair.reason
    assert "shown by a served version left out" in fair.reason
    unseen = compare_with_served(graph, model.split, selected, selected, older, shown=(users[:0], places[:0]))
    assert unseen.pairs == fooled.pairs
