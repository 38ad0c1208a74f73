"""The training recipes (`TrainConfig` / `ModelConfig` options): each does what it says, and each
changes what a run trains (same seed, another loss trajectory)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recsys_core.evaluation.split import split_indices, training_graph
from recsys_core.features import INTERACTION_EDGE_LAYOUT
from recsys_core.graph import INTERACTS, REV_INTERACTS, build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import TrainConfig
from recsys_core.training.loop import train
from recsys_core.training.losses import ranking_loss
from recsys_core.training.sampling import TrainingSampler

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

MODEL = ModelConfig(d_model=16, head_hidden=(32, 16), d_ctx=8)
TRAIN = TrainConfig(
    max_steps=2, eval_every=2, batch_size=1024, city_pool=64, in_batch_negatives=128, head_batch=256, eval_users=100
)


@pytest.fixture(scope="module")
def graph(world):
    """The test world's graph, its random split and the training graph's inputs."""
    bundle = build_from_world(world)
    split = split_indices(bundle, seed=0)
    return bundle, split, GraphInputs.from_hetero(training_graph(bundle, split))


@pytest.fixture(scope="module")
def bundle(graph):
    return graph[0]


@pytest.fixture(scope="module")
def split(graph):
    return graph[1]


@pytest.fixture(scope="module")
def inputs(graph):
    return graph[2]


@pytest.fixture(scope="module")
def default_losses(bundle, split):
    return [r["loss"] for r in train(bundle, split, MODEL, TRAIN).history]


def test_engagement_weighted_positives_draw_attended_pairs_more_often(bundle, split, inputs):
    sampler = TrainingSampler(
        bundle, split, inputs, dataclasses.replace(TRAIN, engagement_weighted=True, batch_size=50_000)
    )
    attr = bundle.data[INTERACTS].edge_attr[torch.from_numpy(split.train_edges)]
    attended = (attr[:, INTERACTION_EDGE_LAYOUT["attended"]].squeeze(-1) > 0).numpy()
    assert 0 < attended.mean() < 1
    drawn = sampler.pairs().numpy()
    assert attended[drawn].mean() > attended.mean() + 0.05  # weight 4 against 1-3
    plain = TrainingSampler(bundle, split, inputs, dataclasses.replace(TRAIN, batch_size=50_000)).pairs().numpy()
    assert abs(attended[plain].mean() - attended.mean()) < 0.02


def test_mixed_negatives_come_from_other_cities_too(bundle, split, inputs):
    users = torch.arange(min(2000, inputs.num_nodes["user"]))
    for share, outside in ((1.0, 0.0), (0.5, 0.3)):
        sampler = TrainingSampler(bundle, split, inputs, dataclasses.replace(TRAIN, hard_negative_share=share))
        negatives = sampler.negatives(users, 8)
        away = (inputs.city["place"][negatives] != inputs.city["user"][users][:, None]).float().mean().item()
        assert (away == 0.0) if outside == 0.0 else (away > outside)


def test_bpr_is_the_pairwise_loss():
    pos, neg = torch.tensor([[2.0], [0.0]]), torch.tensor([[1.0, 3.0], [0.5, -1.0]])
    bpr = ranking_loss(pos, neg, dataclasses.replace(TRAIN, loss="bpr"))
    torch.testing.assert_close(bpr, torch.nn.functional.softplus(neg - pos).mean())
    assert not torch.isclose(bpr, ranking_loss(pos, neg, TRAIN))


def test_time_decay_adds_a_recency_weight_per_edge(bundle, split):
    graph = training_graph(bundle, split)
    plain, decayed = GraphInputs.from_hetero(graph), GraphInputs.from_hetero(graph, time_decay=True)
    for et in (INTERACTS, REV_INTERACTS):
        assert decayed.edge_attr[et].shape[1] == plain.edge_attr[et].shape[1] + 1
    recency = decayed.edge_attr[INTERACTS][:, -1].numpy()
    age = (graph[INTERACTS].edge_time.max() - graph[INTERACTS].edge_time).numpy()
    assert recency.min() > 0 and recency.max() == pytest.approx(1.0)
    order = np.argsort(age)
    assert np.all(np.diff(recency[order]) <= 1e-6)  # older pairs weigh less


def test_isolated_places_pass_no_interaction_message(inputs):
    places = torch.tensor([0, 3, 7])
    masked = inputs.without_interactions(torch.zeros(0, dtype=torch.long), places)
    place_of_edge = inputs.edge_index[INTERACTS][1]
    isolated = torch.isin(place_of_edge, places)
    assert isolated.any()
    for et in (INTERACTS, REV_INTERACTS):
        keep = torch.empty_like(masked.edge_keep[et])
        keep[inputs.relations[et].order] = masked.edge_keep[et]  # back to edge_index order
        assert torch.equal(keep == 0, isolated)


def test_isolation_draws_the_configured_share(bundle, split, inputs):
    sampler = TrainingSampler(bundle, split, inputs, dataclasses.replace(TRAIN, isolate_place_share=0.25))
    share = len(sampler.isolated_places()) / inputs.num_nodes["place"]
    assert 0.2 < share < 0.3
    off = TrainingSampler(bundle, split, inputs, dataclasses.replace(TRAIN, isolate_place_share=0.0))
    assert len(off.isolated_places()) == 0


@pytest.mark.parametrize(
    ("model", "overrides"),
    [
        (MODEL, {"loss": "bpr"}),
        (MODEL, {"engagement_weighted": True}),
        (MODEL, {"hard_negative_share": 0.5}),
        (MODEL, {"isolate_place_share": 0.0}),
        (dataclasses.replace(MODEL, time_decay=True), {}),
    ],
    ids=["bpr", "engagement_weighted", "mixed_negatives", "no_place_isolation", "time_decay"],
)
def test_each_recipe_changes_training(bundle, split, default_losses, model, overrides):
    losses = [r["loss"] for r in train(bundle, split, model, dataclasses.replace(TRAIN, **overrides)).history]
    assert all(np.isfinite(losses))
    assert losses != default_losses
