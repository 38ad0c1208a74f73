"""Hold out interactions and friend labels *before* the model's graph is built.

Held-out user-place pairs are removed from both interacts and rev_interacts, and the social
edges of held-out friend-label pairs are removed too, so nothing the model is measured on
is visible to message passing (no leakage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import HeteroData

from recsys_core.features import INTERACTION_EDGE_LAYOUT
from recsys_core.graph import INTERACTS, REV_INTERACTS, SOCIAL, GraphBundle


@dataclass
class Split:
    """Index arrays into the full graph's interaction edges and friend labels."""

    train_edges: np.ndarray
    val_edges: np.ndarray
    test_edges: np.ndarray
    train_labels: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray


def split_indices(bundle: GraphBundle, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> Split:
    """Per user, a random val_fraction / test_fraction of their places; labels split at random."""
    rng = np.random.default_rng(seed)
    users = bundle.data[INTERACTS].edge_index[0].numpy()
    order = np.lexsort((rng.random(len(users)), users))  # shuffled within each user
    sorted_users = users[order]
    starts = np.searchsorted(sorted_users, sorted_users, side="left")
    counts = np.bincount(users, minlength=int(bundle.data["user"].num_nodes))[sorted_users]
    rank = np.arange(len(users)) - starts
    n_val = np.round(counts * val_fraction).astype(int)
    n_test = np.round(counts * test_fraction).astype(int)
    # Users with very few pairs keep at least one in training.
    n_test = np.minimum(n_test, np.maximum(counts - 1, 0))
    n_val = np.minimum(n_val, np.maximum(counts - 1 - n_test, 0))
    is_test = rank < n_test
    is_val = (rank >= n_test) & (rank < n_test + n_val)
    labels = rng.permutation(bundle.friend_pairs.shape[1])
    n_lv, n_lt = int(len(labels) * val_fraction), int(len(labels) * test_fraction)
    return Split(
        train_edges=np.sort(order[~is_test & ~is_val]),
        val_edges=np.sort(order[is_val]),
        test_edges=np.sort(order[is_test]),
        train_labels=np.sort(labels[n_lv + n_lt :]),
        val_labels=np.sort(labels[:n_lv]),
        test_labels=np.sort(labels[n_lv : n_lv + n_lt]),
    )


def training_graph(bundle: GraphBundle, split: Split) -> HeteroData:
    """The graph the model sees: training pairs only, no social edge of a held-out label pair, and
    features derived from history (`GraphBundle.derived`) derived from the training pairs alone."""
    data = bundle.data
    train = HeteroData()
    for node_type in data.node_types:
        for key, value in data[node_type].items():
            train[node_type][key] = value
    keep = torch.from_numpy(split.train_edges)
    for edge_type in (INTERACTS, REV_INTERACTS):
        for key, value in data[edge_type].items():
            train[edge_type][key] = value[:, keep] if key == "edge_index" else value[keep]
    if bundle.derived:  # features derived from history: from the training edges only
        edges = train[INTERACTS]
        attended = edges.edge_attr[:, INTERACTION_EDGE_LAYOUT["attended"]][:, 0].numpy()
        x = bundle.rederived(edges.edge_index[0].numpy(), edges.edge_index[1].numpy(), attended)
        for node_type, matrix in x.items():
            train[node_type].x = matrix
    if SOCIAL in data.edge_types:
        social = data[SOCIAL].edge_index
        held_out = np.concatenate([split.val_labels, split.test_labels])
        pairs = bundle.friend_pairs[:, torch.from_numpy(held_out)]
        n = int(data["user"].num_nodes)
        banned = torch.cat([pairs[0] * n + pairs[1], pairs[1] * n + pairs[0]])
        mask = ~torch.isin(social[0] * n + social[1], banned)
        for key, value in data[SOCIAL].items():
            train[SOCIAL][key] = value[:, mask] if key == "edge_index" else value[mask]
    return train
