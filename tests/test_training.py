"""Training: the split, leakage-free training graph, a short training run, determinism, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from recsys_core.evaluation.served_ranking import city_blocks, local_matrix, score_city
from recsys_core.evaluation.split import Split, split_indices, training_graph
from recsys_core.features import INTERACTION_EDGE_LAYOUT
from recsys_core.graph import INTERACTS, REV_INTERACTS, SOCIAL, GraphBundle, build_from_world
from recsys_core.model.checkpoint import CONFIG, WEIGHTS, load_checkpoint, save_checkpoint
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.heads import PlaceContext
from recsys_core.model.inputs import GraphInputs
from recsys_core.taxonomy import C_COARSE, C_FINE, N_TIME_SLOTS
from recsys_core.training.config import TrainConfig
from recsys_core.training.loop import train
from recsys_core.training.pipeline import SPLIT_FILE, TrainedModel, fit
from recsys_core.training.state import CHECKPOINT_FILE, load_training_state
from recsys_core.training.validation import validation_recall

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


SMALL_MODEL: dict[str, Any] = dict(d_model=32, head_hidden=(64, 32), d_ctx=8)
MODEL = ModelConfig(**SMALL_MODEL)
TRAIN = TrainConfig(max_steps=15, eval_every=5, batch_size=2048, city_pool=128, in_batch_negatives=256, head_batch=512)


@pytest.fixture(scope="module")
def bundle(world):
    return build_from_world(world)


@pytest.fixture(scope="module")
def split(bundle) -> Split:
    return split_indices(bundle, seed=0)


@pytest.fixture(scope="module")
def trained(bundle, split) -> TrainedModel:
    return fit(bundle, MODEL, TRAIN, split=split)


def pair_keys(edge_index: torch.Tensor, n_cols: int) -> np.ndarray:
    ei = edge_index.numpy()
    return ei[0].astype(np.int64) * n_cols + ei[1]


def without_seconds(history: pd.DataFrame | list[dict]) -> pd.DataFrame:
    return pd.DataFrame(history).drop(columns="seconds")


# --------------------------------------------------------------------------- split


def test_split_is_a_partition_of_edges_and_labels(bundle, split):
    n_edges = bundle.data[INTERACTS].edge_index.shape[1]
    n_labels = bundle.friend_pairs.shape[1]
    for parts, n in (
        ((split.train_edges, split.val_edges, split.test_edges), n_edges),
        ((split.train_labels, split.val_labels, split.test_labels), n_labels),
    ):
        assert all(len(p) > 0 for p in parts)
        assert all(len(np.unique(p)) == len(p) for p in parts)
        merged = np.concatenate(parts)
        assert len(merged) == n, "parts overlap or miss indices"
        assert np.array_equal(np.sort(merged), np.arange(n))


def test_split_holds_out_about_ten_percent_per_user_and_keeps_a_training_pair(bundle, split):
    users = bundle.data[INTERACTS].edge_index[0].numpy()
    n_users = int(bundle.data["user"].num_nodes)

    def count(idx):
        return np.bincount(users[idx], minlength=n_users)

    total, n_train = count(np.arange(len(users))), count(split.train_edges)
    assert (n_train[total > 0] >= 1).all()
    for part in (split.val_edges, split.test_edges):
        assert 0.08 < len(part) / len(users) < 0.12
        # per user: round(10%) of their pairs (never more than they can spare)
        assert (np.abs(count(part) - total * 0.1) <= 1).all()
    assert 0.08 < len(split.val_labels) / bundle.friend_pairs.shape[1] < 0.12


def test_split_is_deterministic_for_a_seed(bundle, split):
    again, other = split_indices(bundle, seed=0), split_indices(bundle, seed=1)
    for f in dataclasses.fields(Split):
        assert np.array_equal(getattr(split, f.name), getattr(again, f.name)), f.name
    assert not np.array_equal(split.test_edges, other.test_edges)
    assert not np.array_equal(split.test_labels, other.test_labels)


# --------------------------------------------------------------------------- leakage


def test_training_graph_has_no_held_out_pair_and_every_training_pair(bundle, split):
    graph = training_graph(bundle, split)
    n_places = int(bundle.data["place"].num_nodes)
    full = pair_keys(bundle.data[INTERACTS].edge_index, n_places)
    held = full[np.concatenate([split.val_edges, split.test_edges])]
    train_pairs = full[split.train_edges]
    assert len(held) > 0
    seen = pair_keys(graph[INTERACTS].edge_index, n_places)
    seen_rev = pair_keys(graph[REV_INTERACTS].edge_index.flip(0), n_places)
    for keys in (seen, seen_rev):
        assert not np.isin(held, keys).any(), "a held-out user-place pair is visible to message passing"
        assert np.array_equal(np.sort(keys), np.sort(train_pairs))
    # the edge features travel with their edges
    keep = torch.from_numpy(split.train_edges)
    for et in (INTERACTS, REV_INTERACTS):
        assert torch.equal(graph[et].edge_attr, bundle.data[et].edge_attr[keep])
        assert torch.equal(graph[et].edge_time, bundle.data[et].edge_time[keep])
    # node stores are carried over, the full graph is left alone
    assert torch.equal(graph["user"].x, bundle.data["user"].x)
    assert bundle.data[INTERACTS].edge_index.shape[1] == len(full)


def test_training_graph_drops_social_edges_of_held_out_label_pairs_only(bundle, split):
    graph = training_graph(bundle, split)
    n = int(bundle.data["user"].num_nodes)
    held = bundle.friend_pairs[:, torch.from_numpy(np.concatenate([split.val_labels, split.test_labels]))].numpy()
    banned = np.concatenate([held[0] * n + held[1], held[1] * n + held[0]])
    before = pair_keys(bundle.data[SOCIAL].edge_index, n)
    after = pair_keys(graph[SOCIAL].edge_index, n)
    assert np.isin(before, banned).any(), "no held-out label pair has a social edge: the test would be vacuous"
    assert not np.isin(after, banned).any(), "a held-out friend-label pair is linked in the training graph"
    assert np.array_equal(np.sort(after), np.sort(before[~np.isin(before, banned)]))
    kept = ~np.isin(before, banned)
    assert torch.equal(graph[SOCIAL].edge_attr, bundle.data[SOCIAL].edge_attr[torch.from_numpy(kept)])


# --------------------------------------------------------------------------- a short training run


def test_training_lowers_the_loss_and_returns_a_usable_result(trained):
    history = trained.history
    assert list(history["step"]) == list(range(1, TRAIN.max_steps + 1))
    assert trained.stopped_because == "max_steps reached"
    losses = history["loss"].to_numpy()
    assert np.isfinite(losses).all()
    assert losses[-3:].mean() < losses[:3].mean() - 0.1, losses
    assert trained.weights_are_finite()
    evals = history.dropna(subset=["val_recall@20"])
    assert list(evals["step"]) == [5, 10, 15]
    assert trained.best_step in set(evals["step"])
    assert trained.best_val_recall == evals["val_recall@20"].max()
    assert float(evals.loc[evals["step"] == trained.best_step, "val_recall@20"].iloc[0]) == trained.best_val_recall
    assert 0.0 < trained.best_val_recall <= 1.0
    assert not trained.model.training


def test_training_returns_the_weights_of_the_best_step(bundle, split, trained):
    """Re-measuring validation recall on the returned model gives the best recorded value."""
    model = trained.model
    inputs = GraphInputs.from_hetero(training_graph(bundle, split))
    val_users = np.unique(bundle.data[INTERACTS].edge_index[0, torch.from_numpy(split.val_edges)].numpy())
    try:
        recall = validation_recall(model, inputs, bundle, split, val_users, rerank_depth=TRAIN.eval_rerank_depth)
    finally:
        model.eval()  # validation_recall leaves the model in training mode
    assert recall == pytest.approx(trained.best_val_recall, abs=1e-12)


def assert_same_run(a: TrainedModel, b: TrainedModel):
    pd.testing.assert_frame_equal(without_seconds(a.history), without_seconds(b.history), check_exact=True)
    assert (a.best_step, a.best_val_recall) == (b.best_step, b.best_val_recall)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_training_is_deterministic_for_a_seed(bundle, split):
    """Same seed, same everything: sampling, dropout, initialisation and evaluation are all seeded.

    Runs on one intra-op thread (module fixture); see the next test for two threads."""
    assert_same_run(fit(bundle, MODEL, TRAIN, split=split), fit(bundle, MODEL, TRAIN, split=split))


def test_training_is_deterministic_for_a_seed_with_two_threads(bundle, split):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the nondeterminism needs two cores")
    short = dataclasses.replace(TRAIN, max_steps=2, eval_users=20, eval_rerank_depth=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = train(bundle, split, MODEL, short), train(bundle, split, MODEL, short)
    finally:
        torch.set_num_threads(threads)
    for (name, x), y in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_a_different_seed_gives_a_different_run(bundle, split, trained):
    other = train(bundle, split, MODEL, dataclasses.replace(TRAIN, seed=1, max_steps=2, eval_every=2))
    assert [r["loss"] for r in other.history] != list(trained.history["loss"][:2])


def test_masking_the_supervision_edges_changes_training(bundle, split, trained):
    """With the step's positive pairs left out of message passing the same seed trains another
    model; without it the run is the one of earlier rounds (same sampling, same first loss)."""
    short = dataclasses.replace(TRAIN, max_steps=2, eval_every=2)
    masked = train(bundle, split, MODEL, short)
    plain = train(bundle, split, MODEL, dataclasses.replace(short, mask_supervision_edges=False))
    assert list(trained.history["loss"][:2]) == [r["loss"] for r in masked.history]  # the default masks
    assert [r["loss"] for r in plain.history] != [r["loss"] for r in masked.history]


def test_node_vectors_start_at_zero_and_learn_where_there_are_pairs(bundle, split):
    """The hybrid model (features + a learned vector per node, `id_embeddings`) starts as the
    features-only model, and its vectors learn for the nodes with training pairs."""
    hybrid = ModelConfig.for_world(bundle.vocabulary, **bundle.node_counts(), **SMALL_MODEL, id_embeddings="all")
    inputs = GraphInputs.from_hetero(training_graph(bundle, split))
    fresh = GraphRec(hybrid, inputs.edge_dims()).eval()
    features_only = GraphRec(dataclasses.replace(hybrid, id_embeddings=""), inputs.edge_dims()).eval()
    missing, unexpected = fresh.load_state_dict(features_only.state_dict(), strict=False)
    assert set(missing) == {"node_vectors.user.weight", "node_vectors.place.weight"} and not unexpected
    with torch.no_grad():
        for node, z in fresh.embed(inputs).items():
            torch.testing.assert_close(z, features_only.embed(inputs)[node])
    result = train(bundle, split, hybrid, dataclasses.replace(TRAIN, max_steps=3, eval_every=3))
    assert result.model.node_vectors is not None
    ei = inputs.edge_index[INTERACTS]
    for node, column in (("user", 0), ("place", 1)):
        moved = result.model.node_vectors[node].weight.abs().sum(1) > 0
        has_pairs = torch.bincount(ei[column], minlength=moved.numel()) > 0
        assert moved[has_pairs].float().mean() > 0.9
    with pytest.raises(ValueError, match="in the graph"):
        GraphRec(dataclasses.replace(hybrid, n_places=hybrid.n_places + 1), inputs.edge_dims()).check_fits(
            bundle.vocabulary, inputs
        )
    places_only = GraphRec(dataclasses.replace(hybrid, id_embeddings="place"), inputs.edge_dims())
    assert places_only.node_vectors is not None and set(places_only.node_vectors) == {"place"}
    # a config saved when the option was a bool still loads
    legacy = json.loads(hybrid.to_json()) | {"id_embeddings": True}
    assert ModelConfig.from_json(json.dumps(legacy)).id_embeddings == "all"
    with pytest.raises(ValueError, match="id_embeddings"):
        dataclasses.replace(hybrid, id_embeddings="users")


def test_place_offsets_start_at_zero_and_learn_for_places_with_pairs(bundle, split):
    """A low-rank learned offset per place on its output embedding: none at first (the features'
    model), then moved for the places the training pairs name."""
    config = ModelConfig.for_world(bundle.vocabulary, **bundle.node_counts(), **SMALL_MODEL, place_offsets=2)
    inputs = GraphInputs.from_hetero(training_graph(bundle, split))
    fresh = GraphRec(config, inputs.edge_dims()).eval()
    plain = GraphRec(dataclasses.replace(config, place_offsets=0), inputs.edge_dims()).eval()
    fresh.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh.embed(inputs)["place"], plain.embed(inputs)["place"])
    result = train(bundle, split, config, dataclasses.replace(TRAIN, max_steps=3, eval_every=3))
    assert result.model.place_offsets is not None and result.model.place_offsets.weight.shape[1] == 2
    moved = result.model.place_offsets.weight.abs().sum(1) > 0
    has_pairs = torch.bincount(inputs.edge_index[INTERACTS][1], minlength=moved.numel()) > 0
    assert moved[has_pairs].float().mean() > 0.9
    with pytest.raises(ValueError, match="place_offsets"):
        dataclasses.replace(config, place_offsets=-1)


# --------------------------------------------------------------------------- checkpoints


def _scores(model: GraphRec, inputs: GraphInputs):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = model.embed(inputs)
        n_u, n_p = inputs.num_nodes["user"], inputs.num_nodes["place"]
        u = torch.randint(0, n_u, (200,), generator=g)
        v = torch.randint(0, n_u, (200,), generator=g)
        p = torch.randint(0, n_p, (200,), generator=g)
        ctx = PlaceContext(
            inputs.city["user"][u],
            torch.randint(0, N_TIME_SLOTS + 1, (200,), generator=g),
            (torch.rand(200, C_COARSE, generator=g) < 0.3).float(),
            (torch.rand(200, C_FINE, generator=g) < 0.05).float(),
        )
        place = model.place_scores(z["user"][u], z["place"][p], ctx, inputs.x["place"][p])
        friend = model.friend_scores(z["user"][u], z["user"][v], inputs.x["user"][u], inputs.x["user"][v])
    return z, place, friend


def test_trained_model_checkpoint_round_trip(bundle, split, trained, tmp_path):
    trained.model.eval()
    path = trained.save(tmp_path)
    assert path == tmp_path / WEIGHTS
    loaded = TrainedModel.load(tmp_path)
    assert not loaded.model.training
    inputs = GraphInputs.from_hetero(training_graph(bundle, split))
    (z_a, place_a, friend_a), (z_b, place_b, friend_b) = _scores(trained.model, inputs), _scores(loaded.model, inputs)
    for t in ("user", "place"):
        assert torch.equal(z_a[t], z_b[t])
    assert torch.equal(place_a, place_b)
    assert torch.equal(friend_a[0], friend_b[0]) and torch.equal(friend_a[1], friend_b[1])
    for f in dataclasses.fields(Split):
        a, b = getattr(trained.split, f.name), getattr(loaded.split, f.name)
        assert np.array_equal(a, b) and a.dtype == b.dtype, f.name
    assert loaded.model.config == trained.model.config
    assert loaded.train_config == trained.train_config
    assert (loaded.best_step, loaded.best_val_recall, loaded.stopped_because) == (
        trained.best_step,
        trained.best_val_recall,
        trained.stopped_because,
    )
    pd.testing.assert_frame_equal(loaded.history, trained.history)
    # pickle-free files
    weights = torch.load(tmp_path / WEIGHTS, weights_only=True)
    assert set(weights) == set(trained.model.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    arrays = torch.load(tmp_path / SPLIT_FILE, weights_only=True)
    assert set(arrays) == {f.name for f in dataclasses.fields(Split)}
    assert json.loads((tmp_path / CONFIG).read_text())["best_step"] == trained.best_step


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(d_model=16, head_hidden=(32, 16), backbone="gat", gat_heads=2),
        ModelConfig(d_model=16, head_hidden=(32, 16, 8), n_layers=1, time_decay=True),
        ModelConfig(d_model=16, head_hidden=(32, 16), n_layers=0, use_social=False),
    ],
    ids=["gat", "time_decay", "two_tower_no_social"],
)
def test_checkpoint_round_trip_for_other_configs(bundle, split, config, tmp_path):
    inputs = GraphInputs.from_hetero(training_graph(bundle, split), config.use_social, config.time_decay)
    torch.manual_seed(3)
    model = GraphRec(config, inputs.edge_dims()).eval()
    save_checkpoint(model, tmp_path)
    loaded, meta = load_checkpoint(tmp_path)
    assert loaded.config == config
    assert loaded.edge_dims == inputs.edge_dims()
    (z_a, place_a, friend_a), (z_b, place_b, friend_b) = _scores(model, inputs), _scores(loaded, inputs)
    assert torch.equal(z_a["user"], z_b["user"]) and torch.equal(z_a["place"], z_b["place"])
    assert torch.equal(place_a, place_b) and torch.equal(friend_a[0], friend_b[0])
    # the weights really were restored (not just re-initialised identically)
    torch.manual_seed(4)
    fresh = GraphRec(config, inputs.edge_dims()).eval()
    assert not torch.equal(_scores(fresh, inputs)[1], place_a)


# --------------------------------------------------------------------------- resuming from a training checkpoint


class Killed(Exception):
    """Stands in for the process dying between two steps."""


def _kill_at(step: int):
    def progress(record):
        if record["step"] == step:
            raise Killed

    return progress


def test_training_killed_mid_way_resumes_from_its_last_checkpoint_like_an_uninterrupted_run(
    bundle, split, trained, tmp_path
):
    """Checkpoints every 5 steps; killed after step 12, so steps 11-12 are lost. Resuming
    continues at step 11 and ends exactly where the uninterrupted 15-step run (`trained`) ends."""
    config = dataclasses.replace(TRAIN, checkpoint_dir=str(tmp_path), checkpoint_every=5)
    with pytest.raises(Killed):
        train(bundle, split, MODEL, config, progress=_kill_at(12))
    saved = load_training_state(tmp_path)  # weights_only=True: tensors and plain values only
    assert saved["step"] == 10 and [r["step"] for r in saved["history"]] == list(range(1, 11))
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temp file left behind

    resumed = fit(bundle, MODEL, dataclasses.replace(config, resume=True), split=split)
    assert resumed.resumed_from_step == 10
    assert list(resumed.history["step"]) == list(range(1, TRAIN.max_steps + 1))
    assert_same_run(resumed, trained)
    assert load_training_state(tmp_path)["step"] == TRAIN.max_steps


def test_a_run_stopped_by_max_steps_continues_when_resumed_with_more_steps(bundle, split, trained, tmp_path):
    config = dataclasses.replace(TRAIN, max_steps=10, checkpoint_dir=str(tmp_path))
    first = train(bundle, split, MODEL, config)
    assert first.stopped_because == "max_steps reached" and len(first.history) == 10
    more = fit(bundle, MODEL, dataclasses.replace(config, max_steps=TRAIN.max_steps, resume=True), split=split)
    assert more.resumed_from_step == 10 and more.history["step"].iloc[-1] == TRAIN.max_steps
    assert more.history["seconds"].iloc[10] >= more.history["seconds"].iloc[9]  # the clock carries on
    assert_same_run(more, trained)


def test_a_checkpoint_of_another_configuration_or_unreadable_is_not_resumed(bundle, split, tmp_path):
    short = dataclasses.replace(TRAIN, max_steps=2, eval_every=2, checkpoint_dir=str(tmp_path))
    train(bundle, split, MODEL, short)
    other_seed = train(bundle, split, MODEL, dataclasses.replace(short, seed=1, resume=True))
    assert other_seed.resumed_from_step == 0 and [r["step"] for r in other_seed.history] == [1, 2]
    assert load_training_state(tmp_path)["step"] == 2
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    fresh = train(bundle, split, MODEL, dataclasses.replace(short, resume=True))
    assert fresh.resumed_from_step == 0 and len(fresh.history) == 2


def test_training_settings_put_checkpoints_under_the_artifact_root_and_pass_resume_on(tmp_path):
    from recsys_assets.resources import TrainingSettings

    config = TrainingSettings(resume=True).train_config("graphrec", tmp_path)
    assert (config.checkpoint_dir, config.resume) == (str(tmp_path / "checkpoints" / "graphrec"), True)
    assert (
        TrainingSettings(checkpoint_dir="/ckpt").train_config("two_tower", tmp_path).checkpoint_dir == "/ckpt/two_tower"
    )
    off = TrainingSettings(checkpoint_every=-1, resume=True).train_config("graphrec", tmp_path)
    assert (off.checkpoint_dir, off.resume) == ("", False)
    assert TrainingSettings().train_config().checkpoint_dir == ""  # no artifact root given: nowhere


# --------------------------------------------------------------------------- the served two-stage ranking


@pytest.fixture(scope="module")
def untrained(bundle, split):
    inputs = GraphInputs.from_hetero(training_graph(bundle, split))
    torch.manual_seed(0)
    model = GraphRec(MODEL, inputs.edge_dims()).eval()
    with torch.no_grad():
        z = model.embed(inputs)
    city, users, places = city_blocks(inputs)[0]
    return model, z, inputs, city, users[:6], places


def _head_scores(model, z, inputs, city, users, places) -> np.ndarray:
    u = torch.from_numpy(np.repeat(users, len(places)))
    p = torch.from_numpy(np.tile(places, len(users)))
    with torch.no_grad():
        ctx = PlaceContext.neutral(torch.full((len(u),), city, dtype=torch.long), model.layouts)
        head = model.place_scores(z["user"][u], z["place"][p], ctx, inputs.x["place"][p])
    return head.numpy().reshape(len(users), len(places))


def test_score_city_reranks_the_retrieval_top_and_excludes_seen_places(untrained):
    model, z, inputs, city, users, places = untrained
    depth = 10
    exclude_pairs = (np.repeat(users, 3), np.tile(places[[0, 5, 7]], len(users)))
    exclude = local_matrix(*exclude_pairs, users, places)
    scores = score_city(model, z, inputs, city, users, places, exclude, rerank_depth=depth)
    retrieval = (z["user"][users] @ z["place"][places].T).numpy()
    assert scores.shape == (len(users), len(places))
    excluded = exclude.toarray() > 0
    assert np.isneginf(scores[excluded]).all() and np.isfinite(scores[~excluded]).all()
    for row in range(len(users)):
        allowed = np.flatnonzero(~excluded[row])
        by_retrieval = set(allowed[np.argsort(-retrieval[row, allowed], kind="stable")[:depth]].tolist())
        served_top = set(np.argsort(-scores[row], kind="stable")[:depth].tolist())
        assert served_top == by_retrieval, "the re-ranked candidates must be the retrieval top and come first"
        rest = np.setdiff1d(allowed, list(by_retrieval))
        assert np.array_equal(scores[row, rest], retrieval[row, rest])


def test_score_city_serves_candidates_in_head_score_order(untrained):
    model, z, inputs, city, users, places = untrained
    scores = score_city(model, z, inputs, city, users, places, None, rerank_depth=len(places))
    head = _head_scores(model, z, inputs, city, users, places)
    for row in range(len(users)):
        assert np.array_equal(np.argsort(-scores[row], kind="stable")[:10], np.argsort(-head[row], kind="stable")[:10])


# --------------------------------------------------------------------------- featureless training


def _featureless_bundle(with_edge_attr: bool) -> GraphBundle:
    g = torch.Generator().manual_seed(0)
    n_users, n_places = 60, 40
    keys = torch.unique(torch.randint(0, n_users * n_places, (600,), generator=g))
    edge_index = torch.stack([keys // n_places, keys % n_places])
    data = HeteroData()
    data["user"].num_nodes, data["place"].num_nodes = n_users, n_places
    data[INTERACTS].edge_index, data[REV_INTERACTS].edge_index = edge_index, edge_index.flip(0)
    if with_edge_attr:
        for et in (INTERACTS, REV_INTERACTS):
            data[et].edge_attr = torch.zeros(edge_index.shape[1], INTERACTION_EDGE_LAYOUT.width)
    empty = torch.zeros(0, dtype=torch.long)
    return GraphBundle(data, torch.zeros(2, 0, dtype=torch.long), empty, empty)


FEATURELESS = ModelConfig(d_model=16, head_hidden=(16, 8), d_ctx=8, featureless=True, n_users=60, n_places=40)
TINY_TRAIN = TrainConfig(max_steps=4, eval_every=2, batch_size=64, city_pool=16, in_batch_negatives=16, head_batch=32)


def test_featureless_training_runs_on_id_only_nodes():
    bundle = _featureless_bundle(with_edge_attr=True)
    result = train(bundle, split_indices(bundle), FEATURELESS, TINY_TRAIN)
    assert len(result.history) == TINY_TRAIN.max_steps
    assert all(np.isfinite(r["loss"]) for r in result.history)
    assert result.history[-1]["friend_loss"] == 0.0  # no friend labels: the friend losses are skipped
    assert np.isfinite(result.best_val_recall)


def test_featureless_training_runs_without_edge_features():
    bundle = _featureless_bundle(with_edge_attr=False)
    result = train(bundle, split_indices(bundle), FEATURELESS, TINY_TRAIN)
    assert len(result.history) == TINY_TRAIN.max_steps
