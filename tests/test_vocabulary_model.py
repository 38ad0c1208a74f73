"""A model of a world with another vocabulary: its widths follow the vocabulary, it trains, it saves
and loads with it, and nothing of the built-in taxonomy sneaks in (a built-in-sized model is refused).

The world here is made up: 2 cities (3 and 5 neighbourhoods), 3 categories, 7 tags, 4 vibes, 3 time
slots whose bucket mapping is not the built-in one, and 2 price bands. Its graph is built directly
with the feature layouts of that vocabulary, so none of these tests goes through the synthetic
generator (which only knows the built-in taxonomy).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from recsys_core.evaluation.split import split_indices, training_graph
from recsys_core.features import INTERACTION_EDGE_LAYOUT, SOCIAL_EDGE_LAYOUT, FeatureLayouts
from recsys_core.graph import INTERACTS, REV_INTERACTS, SOCIAL, GraphBundle
from recsys_core.manifest import ServingManifest
from recsys_core.model.checkpoint import CONFIG, WEIGHTS, load_checkpoint, load_vocabulary, save_checkpoint
from recsys_core.model.config import VOCABULARY_SIZES, ModelConfig
from recsys_core.model.encoders import linear_at
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.heads import ANY_SLOT, PlaceContext
from recsys_core.model.inputs import GraphInputs
from recsys_core.retrieval.embeddings import embedding_matrix, export_embeddings
from recsys_core.retrieval.publish import publish
from recsys_core.training.config import TrainConfig
from recsys_core.training.loop import train
from recsys_core.training.pipeline import TrainedModel, fit
from recsys_core.training.sampling import TrainingSampler, dominant_slot
from recsys_core.vocabulary import BUILTIN, NO_CATEGORY, VOCABULARY_FILE, Vocabulary

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

SMALL_VOCAB = Vocabulary(
    cities=("Avonlea", "Brigadoon"),
    neighborhoods=(("Harbour", "Hill", "Mill"), ("North", "South", "East", "West", "Centre")),
    categories=("food", "music", "sport"),
    tags=("noodles", "tacos", "jazz", "techno", "squash", "rowing", "misc"),
    tag_category=(0, 0, 1, 1, 2, 2, NO_CATEGORY),
    vibes=("calm", "loud", "early", "late"),
    time_slots=("day", "evening", "late"),
    # morning, afternoon, evening, night x (weekday, weekend): not the built-in mapping
    slot_of_bucket=((0, 0), (0, 1), (1, 2), (2, 2)),
    price_bands=("cheap", "dear"),
)
LAYOUTS = FeatureLayouts.for_vocabulary(SMALL_VOCAB)
SETTINGS = dict(d_model=16, head_hidden=(32, 16), d_ctx=8)
CONFIG_SMALL = ModelConfig.for_vocabulary(SMALL_VOCAB, **SETTINGS)
TRAIN = TrainConfig(
    max_steps=6,
    eval_every=3,
    batch_size=256,
    city_pool=16,
    in_batch_negatives=32,
    head_batch=64,
    friend_batch=32,
    eval_rerank_depth=10,
)
N_USERS, N_PLACES = 60, 40


def _rows(g: torch.Generator, n: int, width: int) -> torch.Tensor:
    return torch.rand(n, width, generator=g)


def small_world_graph(seed: int = 0) -> GraphBundle:
    """A random graph whose node features are in SMALL_VOCAB's layouts and whose ids are in its ranges."""
    g = torch.Generator().manual_seed(seed)
    user, place = LAYOUTS.user, LAYOUTS.place
    user_city = torch.arange(N_USERS) % SMALL_VOCAB.n_cities
    place_city = torch.arange(N_PLACES) % SMALL_VOCAB.n_cities
    n_local = torch.tensor([len(n) for n in SMALL_VOCAB.neighborhoods])

    x_user = torch.zeros(N_USERS, user.width)
    x_user[:, user["city_id"]] = user_city[:, None].float()
    x_user[:, user["home_neighborhood_id"]] = (torch.rand(N_USERS, generator=g) * n_local[user_city]).floor()[:, None]
    for block in ("cat_pref", "fine_pref", "vibe_pref", "behaviour"):
        x_user[:, user[block]] = _rows(g, N_USERS, user.size(block))
    area = _rows(g, N_USERS, user.size("area_freqs"))
    area = area * (torch.arange(user.size("area_freqs"))[None, :] < n_local[user_city][:, None])  # the city's own
    x_user[:, user["area_freqs"]] = area / area.sum(-1, keepdim=True)

    x_place = torch.zeros(N_PLACES, place.width)
    x_place[:, place["city_id"]] = place_city[:, None].float()
    x_place[:, place["neighborhood_id"]] = (torch.rand(N_PLACES, generator=g) * n_local[place_city]).floor()[:, None]
    category = torch.randint(0, len(SMALL_VOCAB.categories), (N_PLACES,), generator=g)
    x_place[:, place["category_one_hot"]] = torch.nn.functional.one_hot(category, len(SMALL_VOCAB.categories)).float()
    tags = (_rows(g, N_PLACES, len(SMALL_VOCAB.tags)) < 0.4).float()
    tags[:, 0] = torch.where(tags.sum(-1) == 0, 1.0, tags[:, 0])  # every place has a tag
    x_place[:, place["fine_tag_vector"]] = tags / tags.sum(-1, keepdim=True)
    x_place[:, place["price_band"]] = torch.randint(0, 2, (N_PLACES, 1), generator=g).float()
    x_place[:, place["typical_time_slot"]] = torch.randint(0, 3, (N_PLACES, 1), generator=g).float()
    x_place[:, place["popularity"]] = _rows(g, N_PLACES, 4)

    # ~10 same-city places per user
    pairs = set()
    for user_index in range(N_USERS):
        local = torch.nonzero(place_city == user_city[user_index]).squeeze(-1)
        for p in local[torch.randperm(len(local), generator=g)[:10]].tolist():
            pairs.add((user_index, p))
    edge_index = torch.tensor(sorted(pairs)).T.contiguous()
    n_edges = edge_index.shape[1]
    attr = torch.zeros(n_edges, INTERACTION_EDGE_LAYOUT.width)
    for block in ("rating", "dwell", "likes", "saves", "shares"):
        attr[:, INTERACTION_EDGE_LAYOUT[block]] = _rows(g, n_edges, 1)
    attr[:, INTERACTION_EDGE_LAYOUT["attended"]] = (_rows(g, n_edges, 1) < 0.3).float()
    for block in ("time_of_day", "day_of_week"):
        shares = _rows(g, n_edges, INTERACTION_EDGE_LAYOUT.size(block))
        attr[:, INTERACTION_EDGE_LAYOUT[block]] = shares / shares.sum(-1, keepdim=True)

    data = HeteroData()
    for node, x in (("user", x_user), ("place", x_place)):
        data[node].x = x
        data[node].node_id = torch.arange(len(x), dtype=torch.long) + 1000
        data[node].num_nodes = len(x)
    for et, index in ((INTERACTS, edge_index), (REV_INTERACTS, edge_index.flip(0))):
        data[et].edge_index = index.contiguous()
        data[et].edge_attr = attr
        data[et].edge_count = torch.ones(n_edges, dtype=torch.int32)
        data[et].edge_time = torch.randint(0, 10**12, (n_edges,), generator=g)
    u = torch.arange(0, N_USERS - 2)
    v = u + 2  # same city (cities alternate)
    social_attr = _rows(g, len(u), SOCIAL_EDGE_LAYOUT.width)
    data[SOCIAL].edge_index = torch.stack([torch.cat([u, v]), torch.cat([v, u])])
    data[SOCIAL].edge_attr = torch.cat([social_attr, social_attr])
    lu = torch.randint(0, N_USERS, (200,), generator=g)
    lv = (lu + 2 * torch.randint(1, 10, (200,), generator=g)) % N_USERS
    return GraphBundle(
        data=data,
        friend_pairs=torch.stack([lu, lv]),
        friend_compat=torch.randint(0, 2, (200,), generator=g),
        friend_attend=torch.randint(0, 2, (200,), generator=g),
        vocabulary=SMALL_VOCAB,
    )


@pytest.fixture(scope="module")
def bundle() -> GraphBundle:
    return small_world_graph()


@pytest.fixture(scope="module")
def split(bundle):
    return split_indices(bundle, seed=0)


@pytest.fixture(scope="module")
def trained(bundle, split) -> TrainedModel:
    torch.manual_seed(0)
    return fit(bundle, CONFIG_SMALL, TRAIN, split=split)


def test_small_vocabulary_is_not_the_built_in_one_in_any_size():
    """Otherwise a test below could pass with the built-in sizes."""
    for name in VOCABULARY_SIZES:
        assert getattr(CONFIG_SMALL, name) != getattr(ModelConfig(), name), name
    assert CONFIG_SMALL.layouts == LAYOUTS
    assert LAYOUTS.user.width != FeatureLayouts.for_vocabulary(BUILTIN).user.width
    assert LAYOUTS.place.width != FeatureLayouts.for_vocabulary(BUILTIN).place.width


def test_model_input_widths_are_the_vocabularys_feature_widths():
    torch.manual_seed(0)
    model = GraphRec(CONFIG_SMALL, {INTERACTS: 12, REV_INTERACTS: 12, SOCIAL: 3})
    assert model.layouts == LAYOUTS
    user_enc, place_enc = model.encoders["user"], model.encoders["place"]
    location = 16 + 32  # city + neighbourhood embeddings
    # user: location + every column but the two ids + the unit fine-taste copy
    assert linear_at(user_enc.mlp, 0).in_features == location + LAYOUTS.user.width - 2 + len(SMALL_VOCAB.tags)
    # place: location + price and slot embeddings + categories, tags, popularity + unit tag copy
    place_width = len(SMALL_VOCAB.categories) + 2 * len(SMALL_VOCAB.tags) + LAYOUTS.place.size("popularity")
    assert linear_at(place_enc.mlp, 0).in_features == location + 16 + place_width
    assert user_enc.location.city.num_embeddings == 2
    assert user_enc.location.neighborhood.num_embeddings == 2 * 5
    assert place_enc.price.num_embeddings == 2
    assert place_enc.slot.num_embeddings == 3
    assert model.context.city.num_embeddings == 2
    assert model.context.slot.num_embeddings == 3 + 1  # + ANY_SLOT's row
    assert model.context.wishes.in_features == 3 + 7
    assert model.wide is not None
    taste = len(SMALL_VOCAB.tags) + len(SMALL_VOCAB.categories) + LAYOUTS.user.size("area_freqs")
    assert model.wide.user.in_features == taste
    assert model.wide.place.in_features == taste + LAYOUTS.place.size("popularity")


def test_small_vocabulary_model_runs_forward_and_backward(bundle):
    torch.manual_seed(0)
    inputs = GraphInputs.from_hetero(bundle.data, time_decay=True)
    # A few UNKNOWN neighbourhoods, price bands and time slots, so that path is in the pass too.
    inputs.x["place"] = inputs.x["place"].clone()
    for block in ("neighborhood_id", "price_band", "typical_time_slot"):
        inputs.x["place"][:3, LAYOUTS.place[block]] = -1
    inputs.x["user"] = inputs.x["user"].clone()
    inputs.x["user"][:3, LAYOUTS.user["home_neighborhood_id"]] = -1
    model = GraphRec(ModelConfig.for_vocabulary(SMALL_VOCAB, **SETTINGS, time_decay=True), inputs.edge_dims())
    model.check_fits(SMALL_VOCAB, inputs)
    z = model.embed(inputs)
    assert z["user"].shape == (N_USERS, 16) and z["place"].shape == (N_PLACES, 16)
    g = torch.Generator().manual_seed(1)
    n = 12
    u, p = torch.arange(n), torch.randint(0, N_PLACES, (n,), generator=g)
    ctx = PlaceContext(
        city=inputs.city["user"][u],
        time_slot=torch.tensor([ANY_SLOT, 0, 1, 2] * 3),
        categories=(torch.rand(n, 3, generator=g) < 0.5).float(),
        tags=(torch.rand(n, 7, generator=g) < 0.3).float(),
    )
    neutral = PlaceContext.neutral(inputs.city["user"][u], model.layouts)
    assert neutral.categories.shape == (n, 3) and neutral.tags.shape == (n, 7)
    place_x = inputs.x["place"][p]
    s = model.place_scores(z["user"][u], z["place"][p], ctx, place_x)
    s_neutral = model.place_scores(z["user"][u], z["place"][p], neutral, place_x)
    c, a = model.friend_scores(z["user"][u], z["user"][u + 2], inputs.x["user"][u], inputs.x["user"][u + 2])
    out = torch.cat([s, s_neutral, c, a])
    assert out.shape == (4 * n,) and torch.isfinite(out).all()
    (out * torch.randn(len(out), generator=g)).sum().backward()
    no_grad = [name for name, q in model.named_parameters() if q.grad is None or not (q.grad != 0).any()]
    assert not no_grad, f"parameters without a gradient: {no_grad}"


def test_a_built_in_sized_model_is_refused_on_the_small_worlds_graph(bundle, split):
    with pytest.raises(ValueError, match="vocabulary") as info:
        train(bundle, split, ModelConfig(**SETTINGS), TRAIN)
    assert "n_tags 100 (vocabulary: 7)" in str(info.value)
    inputs = GraphInputs.from_hetero(bundle.data)
    with pytest.raises(ValueError, match="place features 18 wide"):
        GraphRec(ModelConfig(**SETTINGS), inputs.edge_dims()).check_fits(BUILTIN, inputs)


def test_dominant_slot_maps_buckets_through_the_vocabulary():
    attr = torch.zeros(8, INTERACTION_EDGE_LAYOUT.width)
    tod, dow = INTERACTION_EDGE_LAYOUT["time_of_day"].start, INTERACTION_EDGE_LAYOUT["day_of_week"].start
    for row, (t, w) in enumerate((t, w) for t in range(4) for w in range(2)):
        attr[row, tod + t] = 1.0
        attr[row, dow + w] = 1.0
    expected = [SMALL_VOCAB.slot_of_bucket[t][w] for t in range(4) for w in range(2)]
    assert dominant_slot(attr, SMALL_VOCAB).tolist() == expected
    assert dominant_slot(attr, BUILTIN).tolist() == [BUILTIN.time_slot_of(t, w) for t in range(4) for w in range(2)]
    assert dominant_slot(attr, SMALL_VOCAB).tolist() != dominant_slot(attr, BUILTIN).tolist()
    no_slots = Vocabulary(cities=("Solo",))
    assert dominant_slot(attr, no_slots).tolist() == [ANY_SLOT] * 8


def test_sampler_contexts_are_in_the_vocabularys_slots_and_widths(bundle, split):
    inputs = GraphInputs.from_hetero(training_graph(bundle, split))
    sampler = TrainingSampler(bundle, split, inputs, TRAIN)
    attr = bundle.data[INTERACTS].edge_attr[torch.from_numpy(split.train_edges)].numpy()
    tod = attr[:, INTERACTION_EDGE_LAYOUT["time_of_day"]].argmax(-1)
    dow = attr[:, INTERACTION_EDGE_LAYOUT["day_of_week"]].argmax(-1)
    expected = np.asarray(SMALL_VOCAB.slot_of_bucket)[tod, dow]
    assert np.array_equal(sampler.slot.numpy(), expected)
    assert set(expected.tolist()) == {0, 1, 2}
    batch = sampler.pairs()[:50]
    ctx = sampler.context(batch, inputs, sampler.users[batch])
    assert ctx.categories.shape == (50, 3) and ctx.tags.shape == (50, 7)
    assert set(ctx.time_slot.tolist()) <= {ANY_SLOT, 0, 1, 2}


def test_small_vocabulary_model_trains(trained):
    assert len(trained.history) == TRAIN.max_steps
    assert np.isfinite(trained.history["loss"]).all()
    assert np.isfinite(trained.history["val_recall@20"].dropna()).all()
    assert trained.weights_are_finite()
    assert trained.vocabulary == SMALL_VOCAB
    assert trained.model.config == CONFIG_SMALL
    # it learned something: the weights moved away from a fresh model's
    torch.manual_seed(0)
    fresh = GraphRec(CONFIG_SMALL, trained.model.edge_dims)
    moved = [not torch.equal(a, b) for a, b in zip(fresh.parameters(), trained.model.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2


def test_trained_model_save_and_load_round_trip_the_vocabulary(trained, bundle, tmp_path):
    path = trained.save(tmp_path)
    assert path == tmp_path / WEIGHTS
    assert (tmp_path / VOCABULARY_FILE).exists()  # beside the weights: where serving reads it
    assert Vocabulary.load(tmp_path) == SMALL_VOCAB
    assert load_vocabulary(tmp_path) == SMALL_VOCAB
    loaded = TrainedModel.load(tmp_path)
    assert loaded.vocabulary == SMALL_VOCAB
    assert loaded.model.config == CONFIG_SMALL
    inputs = GraphInputs.from_hetero(bundle.data)
    with torch.no_grad():
        a, b = trained.model.eval().embed(inputs), loaded.model.embed(inputs)
    for t in a:
        torch.testing.assert_close(a[t], b[t], rtol=0, atol=0)
    # Without its vocabulary.json the directory reads as a built-in model, which this one is not.
    (tmp_path / VOCABULARY_FILE).unlink()
    with pytest.raises(ValueError, match="vocabulary"):
        TrainedModel.load(tmp_path)


def test_artifacts_from_before_vocabularies_load_as_the_built_in_vocabulary(tmp_path):
    """An old model directory: model.json without the size fields and no vocabulary.json."""
    torch.manual_seed(0)
    model = GraphRec(ModelConfig(**SETTINGS), {INTERACTS: 12, REV_INTERACTS: 12, SOCIAL: 3})
    empty = np.zeros(0, np.int64)
    from recsys_core.evaluation.split import Split

    old = TrainedModel(
        model=model,
        vocabulary=BUILTIN,
        split=Split(np.arange(3), empty, empty, empty, empty, empty),
        train_config=TrainConfig(),
        history=pd.DataFrame({"step": [1], "loss": [1.0]}),
        best_step=1,
        best_val_recall=0.1,
        stopped_because="max_steps reached",
        seconds=1.0,
    )
    old.save(tmp_path)
    (tmp_path / VOCABULARY_FILE).unlink()
    meta = json.loads((tmp_path / CONFIG).read_text())
    for name in VOCABULARY_SIZES:
        del meta["model_config"][name]
    (tmp_path / CONFIG).write_text(json.dumps(meta))
    assert ModelConfig.from_json(json.dumps(meta["model_config"])) == ModelConfig(**SETTINGS)
    loaded = TrainedModel.load(tmp_path)
    assert loaded.vocabulary == BUILTIN
    assert loaded.model.config == ModelConfig(**SETTINGS)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key


def test_the_built_in_vocabularys_config_and_model_are_the_defaults():
    """for_vocabulary(BUILTIN) is the config the code had before: same parameters, same random init."""
    assert ModelConfig.for_vocabulary(BUILTIN, **SETTINGS) == ModelConfig(**SETTINGS)
    dims = {INTERACTS: 12, REV_INTERACTS: 12, SOCIAL: 3}
    torch.manual_seed(0)
    a = GraphRec(ModelConfig.for_vocabulary(BUILTIN, **SETTINGS), dims).state_dict()
    torch.manual_seed(0)
    b = GraphRec(ModelConfig(**SETTINGS), dims).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_publish_writes_the_vocabulary_beside_the_served_checkpoint(trained, bundle, tmp_path):
    manifest_path = publish(trained.model, bundle, tmp_path, version="v1")
    manifest = ServingManifest.read(manifest_path)
    assert Vocabulary.load(manifest.model.directory) == SMALL_VOCAB
    model, _ = load_checkpoint(manifest.model.directory)
    assert model.config == CONFIG_SMALL
    tables = export_embeddings(model, bundle)
    assert embedding_matrix(tables.places).shape == (N_PLACES, 16)
    assert set(tables.users.column("city_id").to_pylist()) == {0, 1}


def test_save_checkpoint_refuses_a_vocabulary_the_model_is_not_of(trained, tmp_path):
    with pytest.raises(ValueError, match="vocabulary"):
        save_checkpoint(trained.model, tmp_path, vocabulary=BUILTIN)


def test_compare_runs_on_the_small_world(trained, bundle, split):
    from recsys_core.evaluation.compare import compare

    comparison = compare(bundle, split, {"graphrec": trained.model}, baseline_budget_s=1.0)
    assert np.isfinite(comparison.place_metric("test", "graphrec"))
    assert "feature_cosine" in set(comparison.friends["model"])


def test_pipeline_model_config_follows_the_graphs_vocabulary():
    from recsys_assets.resources import TrainingSettings

    settings = TrainingSettings(d_model=24, n_layers=1)
    config = settings.graphrec_config(SMALL_VOCAB, n_layers=0)
    assert config == ModelConfig.for_vocabulary(SMALL_VOCAB, d_model=24, n_layers=0, backbone="sage")
    assert settings.graphrec_config(BUILTIN) == ModelConfig(d_model=24, n_layers=1)


def test_any_slot_is_the_context_row_after_the_vocabularys_last_slot():
    from recsys_core.model.heads import ContextEncoder

    torch.manual_seed(0)
    encoder = ContextEncoder(CONFIG_SMALL).eval()

    def encode(slot: int) -> torch.Tensor:
        return encoder(PlaceContext(torch.tensor([1]), torch.tensor([slot]), torch.zeros(1, 3), torch.zeros(1, 7)))

    with torch.no_grad():
        torch.testing.assert_close(encode(ANY_SLOT), encode(len(SMALL_VOCAB.time_slots)), rtol=0, atol=0)
        assert not torch.allclose(encode(ANY_SLOT), encode(len(SMALL_VOCAB.time_slots) - 1))
