"""The numpy serving head must give the trained model's scores, for every kind of context."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core.graph import build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.heads import ANY_SLOT, PlaceContext
from recsys_core.model.inputs import GraphInputs
from recsys_core.recommend.fast_head import FastFriendHead, FastPlaceHead
from recsys_core.taxonomy import C_COARSE, C_FINE

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def model_and_embeddings(world):
    torch.manual_seed(3)
    bundle = build_from_world(world)
    inputs = GraphInputs.from_hetero(bundle.data)
    model = GraphRec(ModelConfig(d_model=32, head_hidden=(48, 24), d_ctx=8), inputs.edge_dims()).eval()
    with torch.no_grad():
        for p in [*model.place_head.parameters(), *model.friend_head.parameters()]:  # away from the near-zero
            p.add_(torch.randn_like(p) * 0.2)  # init of the deep corrections, so every term matters
        z = model.embed(inputs)
    return model, z, inputs


@pytest.mark.parametrize(
    "slot, cats, tags",
    [(ANY_SLOT, (), ()), (2, (), ()), (ANY_SLOT, (1, 3), ()), (5, (0,), (4, 17, 80)), (0, (), (9,))],
)
def test_fast_head_equals_the_torch_place_scores(model_and_embeddings, slot, cats, tags):
    model, z, inputs = model_and_embeddings
    place_x = inputs.x["place"]
    fast = FastPlaceHead(model, z["place"], place_x.numpy())
    user, city = 5, int(inputs.city["user"][5])
    places = np.flatnonzero(inputs.city["place"].numpy() == city)[:150]
    n = len(places)
    ctx = PlaceContext(torch.full((n,), city), torch.full((n,), slot), torch.zeros(n, C_COARSE), torch.zeros(n, C_FINE))
    ctx.categories[:, list(cats)] = 1.0
    ctx.tags[:, list(tags)] = 1.0
    p = torch.from_numpy(places)
    with torch.no_grad():
        expected = model.place_scores(z["user"][user].expand(n, -1), z["place"][p], ctx, place_x[p]).numpy()
    got = fast.scores(z["user"][user].numpy(), places, city, slot, cats, tags)
    assert np.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert np.std(expected) > 1e-3  # the comparison is not between two constants


@pytest.mark.parametrize("with_features", [True, False])
def test_fast_friend_head_equals_the_torch_friend_scores(model_and_embeddings, with_features):
    model, z, inputs = model_and_embeddings
    x = inputs.x["user"] if with_features else torch.zeros(len(inputs.x["user"]), 0)
    fast = FastFriendHead(model, x.numpy())
    user = 7
    others = np.setdiff1d(np.arange(min(len(x), 180)), [user])
    u, v = torch.full((len(others),), user), torch.from_numpy(others)
    with torch.no_grad():
        compat, attend = model.friend_scores(z["user"][u], z["user"][v], x[u], x[v])
    got_compat, got_attend = fast.scores(z["user"].numpy(), user, others)
    assert np.allclose(got_compat, compat.numpy(), atol=1e-4, rtol=1e-4)
    assert np.allclose(got_attend, attend.numpy(), atol=1e-4, rtol=1e-4)
    assert np.std(compat.numpy()) > 1e-3 and np.std(attend.numpy()) > 1e-3
