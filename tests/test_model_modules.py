"""GraphRec building blocks: encoders, the sparse weighted mean, both backbones, heads, context, featureless mode.

Every module is checked for output shape and for gradients (finite and non-zero for every parameter),
and the pieces with a closed form (weighted mean, edge-aware conv, match features) against a dense
reference computed independently here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from recsys_core.features import BUILTIN_LAYOUTS, PLACE_LAYOUT, USER_LAYOUT
from recsys_core.graph import INTERACTS, REV_INTERACTS, SOCIAL, build_from_world
from recsys_core.model.backbone import EdgeAwareConv, HeteroBackbone
from recsys_core.model.config import ModelConfig
from recsys_core.model.encoders import IdEncoder, PlaceEncoder, UserEncoder, WideTaste
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.heads import (
    ANY_SLOT,
    N_MATCH_FEATURES,
    N_PAIR_FEATURES,
    ContextEncoder,
    FriendHead,
    PlaceContext,
    PlaceHead,
    match_features,
    pair_features,
)
from recsys_core.model.inputs import GraphInputs
from recsys_core.model.sparse import Relation, weighted_mean
from recsys_core.taxonomy import C_COARSE, C_FINE, N_TIME_SLOTS

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


D = 16
SMALL = dict(d_model=D, head_hidden=(32, 16), d_ctx=8)


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def bundle(world):
    return build_from_world(world)


@pytest.fixture(scope="module")
def inputs(bundle) -> GraphInputs:
    return GraphInputs.from_hetero(bundle.data)


def projection_loss(outputs: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
    """A scalar that depends on every output coordinate with a different weight.

    A plain sum would not do: the sum of a LayerNorm's output does not depend on its input.
    """
    g = torch.Generator().manual_seed(seed)
    terms = ((out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() for out in outputs.values())
    return sum(terms, torch.zeros(()))


def with_unknown_codes(x: torch.Tensor, node_type: str, layouts) -> torch.Tensor:
    """A copy with UNKNOWN (-1) neighbourhood, price band and slot on two rows, so the encoders'
    unknown path is in the pass too (every parameter must still get a gradient)."""
    x = x.clone()
    layout = layouts.user if node_type == "user" else layouts.place
    for block in ("home_neighborhood_id", "neighborhood_id", "price_band", "typical_time_slot"):
        if block in dict(layout.blocks):
            x[:2, layout[block]] = -1
    return x


def assert_all_parameters_get_gradients(module: torch.nn.Module):
    missing, bad, zero = [], [], []
    for name, p in module.named_parameters():
        if p.grad is None:
            missing.append(name)
        elif not torch.isfinite(p.grad).all():
            bad.append(name)
        elif not (p.grad != 0).any():
            zero.append(name)
    assert not missing, f"parameters without gradient: {missing}"
    assert not bad, f"parameters with non-finite gradient: {bad}"
    assert not zero, f"parameters with an all-zero gradient: {zero}"


def dense_weighted_mean(edge_index: torch.Tensor, weights: torch.Tensor, h: torch.Tensor, num_dst: int) -> torch.Tensor:
    """sum_j w_ij h_j / sum_j w_ij, edges in the given order, via a dense matrix."""
    src, dst = edge_index
    w = torch.zeros(num_dst, h.shape[0], dtype=h.dtype).index_put((dst, src), weights, accumulate=True)
    degree = w.sum(1, keepdim=True)
    return torch.where(degree > 0, (w @ h) / degree.clamp_min(1e-30), torch.zeros(()))


def tiny_relation(dtype=torch.float64, seed: int = 0):
    """7 sources -> 5 destinations, unique edges given in a scrambled order; destination 3 has none."""
    g = torch.Generator().manual_seed(seed)
    pairs = [(0, 0), (2, 0), (6, 0), (1, 1), (3, 1), (4, 2), (5, 2), (6, 2), (0, 2), (2, 4), (3, 4)]
    perm = torch.randperm(len(pairs), generator=g)
    edge_index = torch.tensor(pairs).T[:, perm].contiguous()
    relation = Relation(edge_index, num_src=7, num_dst=5)
    values = torch.rand(len(pairs), generator=g, dtype=dtype) + 0.2  # CSR order
    h = torch.randn(7, 3, generator=g, dtype=dtype)
    return edge_index, relation, values, h


# --------------------------------------------------------------------------- encoders


def test_user_and_place_encoders_give_d_model_rows_and_gradients(bundle):
    config = ModelConfig(**SMALL)
    for encoder_cls, node_type in ((UserEncoder, "user"), (PlaceEncoder, "place")):
        torch.manual_seed(0)
        encoder = encoder_cls(config)
        x = with_unknown_codes(bundle.data[node_type].x, node_type, config.layouts)
        out = encoder(x)
        assert out.shape == (x.shape[0], D)
        assert torch.isfinite(out).all()
        projection_loss({node_type: out}).backward()
        assert_all_parameters_get_gradients(encoder)


def test_place_encoder_output_depends_on_the_time_slot(bundle):
    """The embedded columns are really read: changing only a place's time slot changes its row."""
    torch.manual_seed(0)
    encoder = PlaceEncoder(ModelConfig(**SMALL)).eval()
    x = bundle.data["place"].x[:4].clone()
    col = PLACE_LAYOUT["typical_time_slot"].start
    y = x.clone()
    y[:, col] = (x[:, col] + 1) % N_TIME_SLOTS
    assert not torch.allclose(encoder(x), encoder(y))


def test_unknown_codes_share_one_vector_and_differ_from_known_ones(bundle):
    """UNKNOWN (-1) neighbourhood, price band or slot: a vector of its own (zeros), not some real id's."""
    torch.manual_seed(0)
    encoder = PlaceEncoder(ModelConfig(**SMALL)).eval()
    assert "price.unknown" not in dict(encoder.named_parameters())  # fixed: known-only worlds train as before
    x = bundle.data["place"].x[:4].clone()
    col = PLACE_LAYOUT["price_band"].start
    unknown = x.clone()
    unknown[:, col] = -1
    outputs = [encoder(x)] + [encoder(torch.where(torch.arange(x.shape[1]) == col, float(b), x)) for b in range(4)]
    assert all(not torch.allclose(encoder(unknown), out) for out in outputs)


def test_id_encoder_returns_one_learned_row_per_node():
    encoder = IdEncoder(13, D)
    out = encoder(torch.zeros(13, 0))
    assert out.shape == (13, D)
    projection_loss({"x": out}).backward()
    assert_all_parameters_get_gradients(encoder)


def test_wide_taste_path_can_express_the_generators_preference_score_exactly(world, bundle):
    """The linear path's coordinates line up with the oracle: with hand-set weights its dot
    product is the true preference score for every same-city pair (the ranking that matters)."""
    from recsys_core.synthetic.config import PreferenceWeights
    from recsys_core.synthetic.preference import Tastes, Traits, preference_scores

    w = PreferenceWeights()
    n_fine, n_cat, n_area = C_FINE, C_COARSE, USER_LAYOUT.size("area_freqs")
    width = n_fine + n_cat + n_area + 1  # + one coordinate carrying popularity
    wide = WideTaste(ModelConfig(d_model=width))
    with torch.no_grad():
        wide.user.weight.zero_()
        wide.user.bias.zero_()
        wide.place.weight.zero_()
        wide.place.bias.zero_()
        scale = torch.cat(
            [torch.full((n_fine,), w.interest), torch.full((n_cat,), w.category), torch.full((n_area,), w.location)]
        )
        wide.user.weight[: width - 1].copy_(torch.diag(scale))
        wide.user.bias[width - 1] = 1.0
        wide.place.weight[: width - 1, : width - 1].copy_(torch.eye(width - 1))
        wide.place.weight[width - 1, width - 1] = w.popularity  # first popularity column: log1p(base) / 5
        z = wide({"user": bundle.data["user"].x, "place": bundle.data["place"].x})
    scores = (z["user"] @ z["place"].T).numpy()
    truth = preference_scores(
        Tastes.from_table(world["users"].sort_by("user_id")), Traits.from_table(world["places"].sort_by("place_id")), w
    )
    same_city = bundle.data["user"].x[:, 0].numpy()[:, None] == bundle.data["place"].x[:, 0].numpy()[None, :]
    assert same_city.sum() > 1000
    assert abs(scores[same_city] - truth[same_city]).max() < 1e-4


# --------------------------------------------------------------------------- sparse weighted mean


def test_relation_csr_is_sorted_by_destination_and_keeps_edge_attr_aligned():
    edge_index, relation, _, _ = tiny_relation()
    attr = torch.arange(edge_index.shape[1], dtype=torch.float32).unsqueeze(-1)
    relation = Relation(edge_index, 7, 5, attr)
    assert torch.equal(relation.src, edge_index[0, relation.order])
    assert torch.equal(relation.dst, edge_index[1, relation.order])
    assert (relation.dst[1:] >= relation.dst[:-1]).all()
    assert torch.equal(relation.edge_attr.squeeze(-1).long(), relation.order)
    dense = relation.matrix(torch.ones(relation.num_edges, dtype=torch.float64)).to_dense()
    expected = torch.zeros(5, 7, dtype=torch.float64)
    expected[edge_index[1], edge_index[0]] = 1.0
    assert torch.equal(dense, expected)
    assert torch.equal(relation.transpose(torch.ones(relation.num_edges, dtype=torch.float64)).to_dense(), expected.T)


def test_weighted_mean_matches_dense_reference():
    edge_index, relation, values, h = tiny_relation()
    out = weighted_mean(relation, values, h)
    # values are in CSR order: edge i of the CSR is edge order[i] of edge_index
    in_edge_order = torch.empty_like(values)
    in_edge_order[relation.order] = values
    expected = dense_weighted_mean(edge_index, in_edge_order, h, 5)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[3], torch.zeros(3, dtype=out.dtype))  # no incoming edge


def test_weighted_mean_gradients_match_dense_reference():
    edge_index, relation, values, h = tiny_relation()
    upstream = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v1, h1 = values.clone().requires_grad_(), h.clone().requires_grad_()
    (weighted_mean(relation, v1, h1) * upstream).sum().backward()
    v2, h2 = values.clone().requires_grad_(), h.clone().requires_grad_()
    in_edge_order = torch.zeros_like(values).index_put((relation.order,), v2)
    (dense_weighted_mean(edge_index, in_edge_order, h2, 5) * upstream).sum().backward()
    torch.testing.assert_close(v1.grad, v2.grad)
    torch.testing.assert_close(h1.grad, h2.grad)


def test_weighted_mean_passes_gradcheck_in_double_precision():
    _, relation, values, h = tiny_relation()
    values.requires_grad_()
    h.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, x: weighted_mean(relation, v, x), (values, h), eps=1e-6, atol=1e-5)
    # each input alone too (the custom backward branches on needs_input_grad)
    assert torch.autograd.gradcheck(lambda v: weighted_mean(relation, v, h.detach()), (values,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda x: weighted_mean(relation, values.detach(), x), (h,), eps=1e-6, atol=1e-5)


# --------------------------------------------------------------------------- edge-aware conv and backbones


def test_edge_aware_conv_is_the_gated_weighted_mean_in_edge_index_order(inputs):
    """The gate reads each edge's own features: compare with a dense mean built from edge_index order."""
    torch.manual_seed(0)
    et = INTERACTS
    conv = EdgeAwareConv(D, inputs.edge_dims()[et])
    torch.nn.init.normal_(conv.gate.weight)  # the zero init would hide an edge/feature misalignment
    h_src = torch.randn(inputs.num_nodes["user"], D)
    out, weights = conv(h_src, inputs, et)
    assert out.shape == (inputs.num_nodes["place"], D)
    assert weights.shape == (inputs.relations[et].num_edges,)
    w_edge_order = F.softplus(conv.gate(inputs.edge_attr[et])).squeeze(-1) + 1e-3
    expected = dense_weighted_mean(
        inputs.edge_index[et], w_edge_order.double(), conv.lin(h_src).double(), inputs.num_nodes["place"]
    )
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["sage", "gat"])
def test_backbone_shapes_and_every_parameter_gets_a_gradient(inputs, backbone):
    torch.manual_seed(0)
    config = ModelConfig(**SMALL, backbone=backbone, gat_heads=4, dropout=0.0)
    net = HeteroBackbone(config, inputs.edge_dims())
    assert len(net.layers) == config.n_layers
    # The sage gates start as a plain mean (zero weight): every edge then has the same weight, and
    # a weighted mean does not change when all its weights scale together, so the gate bias's
    # gradient is exactly zero in theory and rounding noise in practice. Trained gates differ per
    # edge; give them edge-dependent weights so the bias's gradient is a real one.
    for module in net.modules():
        if isinstance(module, EdgeAwareConv):
            torch.nn.init.normal_(module.gate.weight, std=0.5)
    h = {t: torch.randn(inputs.num_nodes[t], D) for t in ("user", "place")}
    out = net(h, inputs)
    for t in ("user", "place"):
        assert out[t].shape == (inputs.num_nodes[t], D)
        assert torch.isfinite(out[t]).all()
    projection_loss(out).backward()
    assert_all_parameters_get_gradients(net)
    assert set(net.last_edge_weights) == {INTERACTS, REV_INTERACTS, SOCIAL}


@pytest.mark.parametrize("backbone", ["sage", "gat"])
def test_backbone_output_depends_on_neighbours(inputs, backbone):
    """Message passing really passes messages: changing the place states changes the user states."""
    torch.manual_seed(0)
    net = HeteroBackbone(ModelConfig(**SMALL, backbone=backbone, n_layers=1, dropout=0.0), inputs.edge_dims()).eval()
    h = {t: torch.randn(inputs.num_nodes[t], D) for t in ("user", "place")}
    changed = {"user": h["user"], "place": h["place"] + 1.0}
    with torch.no_grad():
        a, b = net(h, inputs)["user"], net(changed, inputs)["user"]
    has_places = torch.bincount(inputs.edge_index[INTERACTS][0], minlength=inputs.num_nodes["user"]) > 0
    assert has_places.any()
    assert ((a - b).abs().sum(-1)[has_places] > 1e-6).all()


def test_left_out_supervision_edges_pass_no_message(inputs):
    """A training step's positive pairs pass no messages: their users aggregate as if those edges
    were not in the graph (`GraphInputs.without_interactions`), and only their users change."""
    torch.manual_seed(0)
    net = HeteroBackbone(ModelConfig(**SMALL, backbone="sage", n_layers=1, dropout=0.0), inputs.edge_dims()).eval()
    h = {t: torch.randn(inputs.num_nodes[t], D) for t in ("user", "place")}
    users, places = inputs.edge_index[INTERACTS]
    degree = torch.bincount(users, minlength=inputs.num_nodes["user"])
    left_out = torch.nonzero(degree[users] >= 2).flatten()[:5]  # edges of users with other places too
    masked = inputs.without_interactions(left_out)
    removed = GraphInputs.from_hetero(_without_edges(inputs, left_out))
    with torch.no_grad():
        full, leave_out, rebuilt = net(h, inputs), net(h, masked), net(h, removed)
    torch.testing.assert_close(leave_out["user"], rebuilt["user"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(leave_out["place"], rebuilt["place"], rtol=1e-5, atol=1e-5)
    changed = (full["user"] - leave_out["user"]).abs().sum(-1) > 1e-6
    assert set(torch.nonzero(changed).flatten().tolist()) == set(users[left_out].tolist())
    with torch.no_grad():
        net(h, masked)
    assert (net.last_edge_weights[INTERACTS][masked.edge_keep[INTERACTS] == 0] == 0).all()


def test_left_out_supervision_edges_pass_no_message_through_gat(inputs):
    """The GAT backbone honours `edge_keep` too: a left-out pair neither sends a message nor takes a
    share of its destination's attention, as if the edge were not in the graph. `edge_keep` is in
    CSR order and GAT works in edge_index order, so a mix-up of the two masks the wrong edges."""
    torch.manual_seed(0)
    config = ModelConfig(**SMALL, backbone="gat", gat_heads=2, n_layers=1, dropout=0.0)
    net = HeteroBackbone(config, inputs.edge_dims()).eval()
    h = {t: torch.randn(inputs.num_nodes[t], D) for t in ("user", "place")}
    users, places = inputs.edge_index[INTERACTS]
    degree = torch.bincount(users, minlength=inputs.num_nodes["user"])
    left_out = torch.nonzero(degree[users] >= 2).flatten()[:5]
    masked = inputs.without_interactions(left_out)
    assert not torch.equal(masked.edge_keep[INTERACTS], masked.edge_keep[INTERACTS][inputs.relations[INTERACTS].order])
    removed = GraphInputs.from_hetero(_without_edges(inputs, left_out))
    with torch.no_grad():
        full, leave_out = net(h, inputs), net(h, masked)
        weights = {et: w.clone() for et, w in net.last_edge_weights.items()}
        rebuilt = net(h, removed)
    torch.testing.assert_close(leave_out["user"], rebuilt["user"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(leave_out["place"], rebuilt["place"], rtol=1e-5, atol=1e-5)
    changed = (full["user"] - leave_out["user"]).abs().sum(-1) > 1e-6
    assert set(torch.nonzero(changed).flatten().tolist()) == set(users[left_out].tolist())
    changed_places = (full["place"] - leave_out["place"]).abs().sum(-1) > 1e-6
    assert set(torch.nonzero(changed_places).flatten().tolist()) == set(places[left_out].tolist())
    kept = torch.ones(users.shape[0], dtype=torch.bool)
    kept[left_out] = False
    for et in (INTERACTS, REV_INTERACTS):  # edge_index order, full length: 0 where left out, as rebuilt elsewhere
        assert weights[et].shape == (users.shape[0],)
        assert (weights[et][left_out] == 0).all()
        torch.testing.assert_close(weights[et][kept], net.last_edge_weights[et], rtol=1e-5, atol=1e-6)


def _without_edges(inputs: GraphInputs, edges: torch.Tensor):
    """The graph of `inputs` with interaction edges `edges` really removed (for the reference)."""
    from torch_geometric.data import HeteroData

    keep = torch.ones(inputs.edge_index[INTERACTS].shape[1], dtype=torch.bool)
    keep[edges] = False
    data = HeteroData()
    for t in ("user", "place"):
        data[t].x, data[t].num_nodes = inputs.x[t], inputs.num_nodes[t]
    for et, index in inputs.edge_index.items():
        rows = keep if et in (INTERACTS, REV_INTERACTS) else torch.ones(index.shape[1], dtype=torch.bool)
        data[et].edge_index, data[et].edge_attr = index[:, rows], inputs.edge_attr[et][rows]
    return data


def test_gat_backbone_records_one_attention_weight_per_edge(inputs):
    torch.manual_seed(0)
    config = ModelConfig(**SMALL, backbone="gat", gat_heads=4)
    net = HeteroBackbone(config, inputs.edge_dims()).eval()
    with torch.no_grad():
        net({t: torch.randn(inputs.num_nodes[t], D) for t in ("user", "place")}, inputs)
    for et, weights in net.last_edge_weights.items():
        edge_index = inputs.edge_index[et]
        assert weights.shape == (edge_index.shape[1],), et
        assert torch.isfinite(weights).all() and (weights >= 0).all()
        # edge_index order: the attention over each destination's incoming edges sums to one
        num_dst = inputs.num_nodes[et[2]]
        totals = torch.zeros(num_dst).index_add(0, edge_index[1], weights)
        has_edges = torch.bincount(edge_index[1], minlength=num_dst) > 0
        torch.testing.assert_close(totals[has_edges], torch.ones(int(has_edges.sum())), rtol=1e-4, atol=1e-4)


def test_sage_backbone_records_the_gate_weights_in_csr_order(inputs):
    torch.manual_seed(0)
    net = HeteroBackbone(ModelConfig(**SMALL, backbone="sage"), inputs.edge_dims()).eval()
    last_conv = net.layers[-1]["convs"]["__".join(SOCIAL)]
    torch.nn.init.normal_(last_conv.gate.weight)
    with torch.no_grad():
        net({t: torch.randn(inputs.num_nodes[t], D) for t in ("user", "place")}, inputs)
        relation = inputs.relations[SOCIAL]
        expected = F.softplus(last_conv.gate(relation.edge_attr)).squeeze(-1) + 1e-3
    assert net.last_edge_weights[SOCIAL].shape == (relation.num_edges,)
    torch.testing.assert_close(net.last_edge_weights[SOCIAL], expected)


# --------------------------------------------------------------------------- heads and context


def random_context(n: int, g: torch.Generator) -> PlaceContext:
    return PlaceContext(
        city=torch.randint(0, 8, (n,), generator=g),
        time_slot=torch.randint(0, N_TIME_SLOTS + 1, (n,), generator=g),
        categories=(torch.rand(n, C_COARSE, generator=g) < 0.3).float(),
        tags=(torch.rand(n, C_FINE, generator=g) < 0.05).float(),
    )


def test_heads_and_context_encoder_shapes_and_gradients(bundle):
    torch.manual_seed(0)
    config = ModelConfig(**SMALL)
    g = torch.Generator().manual_seed(0)
    b = 9
    ctx = random_context(b, g)
    encoder = ContextEncoder(config)
    c = encoder(ctx)
    assert c.shape == (b, config.d_ctx)

    z_u, z_p = torch.randn(b, D, generator=g), torch.randn(b, D, generator=g)
    match = match_features(ctx, bundle.data["place"].x[:b], BUILTIN_LAYOUTS)
    assert match.shape == (b, N_MATCH_FEATURES)
    head = PlaceHead(config)
    s = head(z_u, z_p, c, match)
    assert s.shape == (b,)
    (s * torch.randn(b, generator=g)).sum().backward()
    assert_all_parameters_get_gradients(head)
    assert_all_parameters_get_gradients(encoder)

    x = bundle.data["user"].x
    pair = pair_features(x[:b], x[b : 2 * b], BUILTIN_LAYOUTS)
    assert pair.shape == (b, N_PAIR_FEATURES)
    friend = FriendHead(config)
    compat, attend = friend(z_u, z_p, pair)
    assert compat.shape == (b,) and attend.shape == (b,)
    (compat * torch.randn(b, generator=g) + attend * torch.randn(b, generator=g)).sum().backward()
    assert_all_parameters_get_gradients(friend)


def test_friend_head_and_friend_scores_are_symmetric(bundle, inputs):
    torch.manual_seed(0)
    config = ModelConfig(**SMALL)
    model = GraphRec(config, inputs.edge_dims()).eval()
    with torch.no_grad():
        z = model.embed(inputs)["user"]
        x = bundle.data["user"].x
        g = torch.Generator().manual_seed(0)
        u = torch.randint(0, len(x), (64,), generator=g)
        v = torch.randint(0, len(x), (64,), generator=g)
        torch.testing.assert_close(
            pair_features(x[u], x[v], BUILTIN_LAYOUTS), pair_features(x[v], x[u], BUILTIN_LAYOUTS)
        )
        c_uv, a_uv = model.friend_scores(z[u], z[v], x[u], x[v])
        c_vu, a_vu = model.friend_scores(z[v], z[u], x[v], x[u])
        torch.testing.assert_close(c_uv, c_vu)
        torch.testing.assert_close(a_uv, a_vu)
        # ... and not trivially constant
        assert c_uv.std() > 0 and a_uv.std() > 0


def _own_and_other_context(place_row: torch.Tensor, city: int):
    cats = place_row[PLACE_LAYOUT["category_one_hot"]] > 0
    tags = place_row[PLACE_LAYOUT["fine_tag_vector"]] > 0
    slot = int(place_row[PLACE_LAYOUT["typical_time_slot"]].item())
    assert cats.any() and (~cats).any() and tags.any() and (~tags).any()
    other_cat = torch.zeros(C_COARSE)
    other_cat[torch.nonzero(~cats)[0]] = 1.0
    other_tag = torch.zeros(C_FINE)
    other_tag[torch.nonzero(~tags)[0]] = 1.0
    city_t = torch.tensor([city])
    own = PlaceContext(city_t, torch.tensor([slot]), cats.float()[None], tags.float()[None])
    other = PlaceContext(city_t, torch.tensor([(slot + 1) % N_TIME_SLOTS]), other_cat[None], other_tag[None])
    return own, other


def test_match_features_are_one_for_the_places_own_traits_and_zero_otherwise(bundle):
    place_x = bundle.data["place"].x
    for p in range(5):
        own, other = _own_and_other_context(place_x[p], int(place_x[p, 0]))
        torch.testing.assert_close(match_features(own, place_x[p : p + 1], BUILTIN_LAYOUTS), torch.ones(1, 3))
        torch.testing.assert_close(match_features(other, place_x[p : p + 1], BUILTIN_LAYOUTS), torch.zeros(1, 3))
        neutral = PlaceContext.neutral(torch.tensor([int(place_x[p, 0])]), BUILTIN_LAYOUTS)
        torch.testing.assert_close(match_features(neutral, place_x[p : p + 1], BUILTIN_LAYOUTS), torch.zeros(1, 3))
    # ANY_SLOT never matches, whatever the place's slot
    row = place_x[:1].clone()
    ctx = PlaceContext(torch.tensor([0]), torch.tensor([ANY_SLOT]), torch.zeros(1, C_COARSE), torch.zeros(1, C_FINE))
    for slot in range(N_TIME_SLOTS):
        row[0, PLACE_LAYOUT["typical_time_slot"]] = slot
        assert match_features(ctx, row, BUILTIN_LAYOUTS)[0, 2] == 0


def test_tag_match_is_the_share_of_requested_tags_the_place_has(bundle):
    row = bundle.data["place"].x[:1]
    tags = row[0, PLACE_LAYOUT["fine_tag_vector"]] > 0
    has, lacks = torch.nonzero(tags)[0], torch.nonzero(~tags)[:3]
    request = torch.zeros(1, C_FINE)
    request[0, has] = 1.0
    request[0, lacks] = 1.0  # 1 of 4 requested tags
    ctx = PlaceContext(torch.tensor([0]), torch.tensor([ANY_SLOT]), torch.zeros(1, C_COARSE), request)
    assert match_features(ctx, row, BUILTIN_LAYOUTS)[0, 1].item() == pytest.approx(0.25)


def test_context_changes_the_place_score(bundle, inputs):
    torch.manual_seed(0)
    model = GraphRec(ModelConfig(**SMALL), inputs.edge_dims()).eval()
    place_x = bundle.data["place"].x
    with torch.no_grad():
        z = model.embed(inputs)
        for p, u in ((0, 0), (3, 7)):
            own, other = _own_and_other_context(place_x[p], int(place_x[p, 0]))
            args = (z["user"][u : u + 1], z["place"][p : p + 1])
            s_own = model.place_scores(*args, own, place_x[p : p + 1])
            s_other = model.place_scores(*args, other, place_x[p : p + 1])
            s_neutral = model.place_scores(*args, PlaceContext.neutral(own.city, model.layouts), place_x[p : p + 1])
            assert s_own.shape == (1,)
            assert not torch.allclose(s_own, s_other)
            assert not torch.allclose(s_own, s_neutral)
            # The match features alone move the score: same context encoding, different place traits.
            swapped = place_x[p : p + 1].clone()
            swapped[0, PLACE_LAYOUT["typical_time_slot"]] = (own.time_slot + 1) % N_TIME_SLOTS
            assert not torch.allclose(s_own, model.place_scores(*args, own, swapped))


def test_graphrec_embed_and_scores_shapes(bundle, inputs):
    torch.manual_seed(0)
    model = GraphRec(ModelConfig(**SMALL), inputs.edge_dims())
    inputs = dataclasses.replace(inputs, x={t: with_unknown_codes(x, t, model.layouts) for t, x in inputs.x.items()})
    z = model.embed(inputs)
    assert z["user"].shape == (inputs.num_nodes["user"], D)
    assert z["place"].shape == (inputs.num_nodes["place"], D)
    u, p = torch.arange(6), torch.arange(6)
    ctx = random_context(6, torch.Generator().manual_seed(0))  # a neutral one would leave the wish weights idle
    s = model.place_scores(z["user"][u], z["place"][p], ctx, inputs.x["place"][p])
    c, a = model.friend_scores(z["user"][u], z["user"][u + 1], inputs.x["user"][u], inputs.x["user"][u + 1])
    assert s.shape == c.shape == a.shape == (6,)
    projection_loss({"s": s, "c": c, "a": a, **z}).backward()
    assert_all_parameters_get_gradients(model.encoders)
    assert_all_parameters_get_gradients(model.backbone)
    assert_all_parameters_get_gradients(model.place_head)
    assert_all_parameters_get_gradients(model.friend_head)
    assert_all_parameters_get_gradients(model.context)


def test_graph_inputs_city_comes_from_the_first_feature_column(bundle, inputs):
    assert torch.equal(inputs.city["user"], bundle.data["user"].x[:, USER_LAYOUT["city_id"].start].long())
    assert torch.equal(inputs.city["place"], bundle.data["place"].x[:, PLACE_LAYOUT["city_id"].start].long())
    assert inputs.edge_dims() == {INTERACTS: 12, REV_INTERACTS: 12, SOCIAL: 3}


# --------------------------------------------------------------------------- featureless mode


def featureless_graph(n_users: int = 30, n_places: int = 20, n_edges: int = 120, seed: int = 0) -> HeteroData:
    g = torch.Generator().manual_seed(seed)
    keys = torch.unique(torch.randint(0, n_users * n_places, (n_edges,), generator=g))
    edge_index = torch.stack([keys // n_places, keys % n_places])
    data = HeteroData()
    data["user"].num_nodes = n_users
    data["place"].num_nodes = n_places
    data[INTERACTS].edge_index = edge_index
    data[REV_INTERACTS].edge_index = edge_index.flip(0)
    return data


@pytest.mark.parametrize("backbone", ["sage", "gat"])
def test_featureless_mode_runs_on_a_graph_without_node_features(backbone):
    data = featureless_graph()
    assert "x" not in data["user"] and "x" not in data["place"]
    inputs = GraphInputs.from_hetero(data)
    assert inputs.x["user"].shape == (30, 0) and inputs.x["place"].shape == (20, 0)
    assert inputs.edge_dims() == {INTERACTS: 1, REV_INTERACTS: 1}
    torch.manual_seed(0)
    config = ModelConfig(**SMALL, featureless=True, n_users=30, n_places=20, backbone=backbone)
    model = GraphRec(config, inputs.edge_dims())
    assert isinstance(model.encoders["user"], IdEncoder)
    z = model.embed(inputs)
    assert z["user"].shape == (30, D) and z["place"].shape == (20, D)
    u, p = torch.arange(10), torch.arange(10)
    ctx = PlaceContext.neutral(inputs.city["user"][u], model.layouts)
    s = model.place_scores(z["user"][u], z["place"][p], ctx, inputs.x["place"][p])
    c, a = model.friend_scores(z["user"][u], z["user"][u + 1], inputs.x["user"][u], inputs.x["user"][u + 1])
    assert s.shape == c.shape == a.shape == (10,)
    assert torch.isfinite(torch.cat([s, c, a])).all()
    projection_loss({"s": s, "c": c, "a": a, **z}).backward()
    assert_all_parameters_get_gradients(model.encoders)
    assert_all_parameters_get_gradients(model.backbone)
