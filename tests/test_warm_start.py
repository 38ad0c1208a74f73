"""Warm starts: a retrain after new data continues saved weights, only of its own configuration, and
only where no held-out pair or label of the new split was trained on."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from recsys_core.evaluation.split import SplitPolicy, split_by_time, split_indices
from recsys_core.graph import INTERACTS, build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import fit
from recsys_core.training.warm_start import refresh_start, warm_start_from

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

MODEL = ModelConfig(d_model=32, head_hidden=(64, 32), d_ctx=8)
TRAIN = TrainConfig(max_steps=10, eval_every=5, batch_size=2048, city_pool=128, in_batch_negatives=256, head_batch=512)


@pytest.fixture(scope="module")
def bundle(world):
    return build_from_world(world)


@pytest.fixture(scope="module")
def split(bundle):
    return split_by_time(bundle, held_out_days=14.0)


@pytest.fixture(scope="module")
def saved(bundle, split, tmp_path_factory):
    """A briefly trained model, saved as a served version's model directory is."""
    trained = fit(bundle, MODEL, TRAIN, split=split)
    directory = tmp_path_factory.mktemp("served")
    trained.save(directory)
    return trained, directory


def test_a_warm_start_begins_at_the_saved_weights_and_never_ends_worse_on_validation(bundle, split, saved):
    trained, directory = saved
    warm, reason = warm_start_from(directory, MODEL, source="served version v1")
    assert warm is not None and reason == "from served version v1"
    again = fit(bundle, MODEL, dataclasses.replace(TRAIN, max_steps=5), split=split, warm_start=warm)
    assert again.warm_start == "from served version v1"
    first = again.history.iloc[0]
    # Step 0 is the saved model itself, measured on this split before any step.
    assert first["step"] == 0 and np.isnan(first["loss"])
    assert first["val_recall@20"] == pytest.approx(trained.best_val_recall, abs=1e-9)
    assert again.best_val_recall >= trained.best_val_recall
    cold = fit(bundle, MODEL, dataclasses.replace(TRAIN, max_steps=5), split=split)
    assert cold.warm_start == "" and cold.history.iloc[0]["step"] > 0


def test_a_selected_warm_start_is_the_saved_model_itself(bundle, split, saved):
    trained, directory = saved
    warm, _ = warm_start_from(directory, MODEL)
    # A learning rate of zero changes nothing: step 0 (the saved weights) stays the best.
    frozen = fit(
        bundle,
        MODEL,
        dataclasses.replace(TRAIN, max_steps=5, lr=0.0, lr_embeddings=0.0, lr_wide=0.0),
        split=split,
        warm_start=warm,
    )
    assert frozen.best_step == 0
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(tensor, frozen.model.state_dict()[name]), name


def test_another_configuration_or_no_model_starts_cold_and_says_why(saved, tmp_path):
    _, directory = saved
    warm, reason = warm_start_from(directory, dataclasses.replace(MODEL, d_model=16), source="served version v1")
    assert warm is None and "served version v1 is of another model configuration (d_model" in reason
    warm, reason = warm_start_from(tmp_path, MODEL)
    assert warm is None and "has no saved model" in reason


def test_a_random_split_never_warm_starts(bundle, saved):
    _, directory = saved
    warm, reason = refresh_start(directory, MODEL, bundle, SplitPolicy(mode="random"))
    assert warm is None and "at random" in reason
    warm, reason = refresh_start(directory, MODEL, bundle, SplitPolicy(mode="time"))
    assert warm is not None


def test_appended_later_pairs_never_move_a_training_pair_into_the_held_out_parts(bundle, split):
    """What makes a warm start after an ingest honest: the old training pairs stay in training."""
    later = copy.deepcopy(bundle)
    store = later.data[INTERACTS]
    n = store.edge_index.shape[1]
    rng = np.random.default_rng(3)
    extra = torch.from_numpy(rng.choice(n, size=n // 20, replace=False))
    week = 7 * 86_400 * 10**6
    store.edge_index = torch.cat([store.edge_index, store.edge_index[:, extra]], dim=1)
    for key in ("edge_time", "edge_first_time"):
        if key in store:
            stamps = getattr(store, key)
            setattr(store, key, torch.cat([stamps, stamps.max() + week + stamps[extra] - stamps[extra].min()]))
    new = split_by_time(later, held_out_days=14.0)
    held_out = set(new.val_edges.tolist()) | set(new.test_edges.tolist())
    assert len(new.test_edges) > 0 and not held_out & set(split.train_edges.tolist())
    assert not (set(new.val_labels.tolist()) | set(new.test_labels.tolist())) & set(split.train_labels.tolist())


def test_a_label_keeps_its_part_when_other_labels_come_and_go(bundle):
    split = split_indices(bundle, seed=0)
    fewer = copy.deepcopy(bundle)
    keep = np.sort(
        np.random.default_rng(5).choice(
            bundle.friend_pairs.shape[1], size=bundle.friend_pairs.shape[1] // 2, replace=False
        )
    )
    fewer.friend_pairs = bundle.friend_pairs[:, torch.from_numpy(keep)]
    fewer.friend_compat, fewer.friend_attend = bundle.friend_compat[keep], bundle.friend_attend[keep]
    again = split_indices(fewer, seed=0)
    for part in ("train_labels", "val_labels", "test_labels"):
        before = set(getattr(split, part).tolist())
        np.testing.assert_array_equal(np.isin(keep, list(before)), np.isin(np.arange(len(keep)), getattr(again, part)))
    other = split_indices(bundle, seed=1)
    assert not np.array_equal(other.val_labels, split.val_labels)
