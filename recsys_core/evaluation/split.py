"""Hold out interactions and friend labels *before* the model's graph is built.

Two ways to choose the held-out pairs (`SplitPolicy`):
- by time: test holds the pairs first seen in the last `held_out_days`, validation those first
  seen in the window before, as a service meets them (users who joined in the test window have
  no training history at all; places that opened then have no visits);
- at random per user (a share of each user's pairs), for data without real timestamps.
"auto" splits by time where the first-seen times span at least `MIN_WINDOWS` windows and the
validation and test windows each hold at least `MIN_WINDOW_SHARE` of the pairs.

Held-out user-place pairs are removed from both interacts and rev_interacts, and the social
edges of held-out friend-label pairs are removed too, so nothing the model is measured on
is visible to message passing. (A training pair that the user kept visiting in the held-out
windows keeps those visits in its aggregated edge features: the graph holds one edge per pair.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import HeteroData

from recsys_core.features import INTERACTION_EDGE_LAYOUT
from recsys_core.graph import INTERACTS, REV_INTERACTS, SOCIAL, GraphBundle

logger = logging.getLogger(__name__)
MICROS_PER_DAY = 86_400 * 1_000_000
MIN_WINDOWS = 3  # "auto" splits by time when the pairs' first-seen times span this many windows
MIN_WINDOW_SHARE = 0.01  # ... and the validation and test windows each hold this share of the pairs
SPLIT_MODES = ("auto", "time", "random")


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
    train_labels, val_labels, test_labels = _random_labels(bundle, seed, val_fraction, test_fraction)
    return Split(
        train_edges=np.sort(order[~is_test & ~is_val]),
        val_edges=np.sort(order[is_val]),
        test_edges=np.sort(order[is_test]),
        train_labels=train_labels,
        val_labels=val_labels,
        test_labels=test_labels,
    )


def _random_labels(
    bundle: GraphBundle, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each label pair's part by a seeded hash of its two user ids, not by a permutation of all
    pairs: a pair keeps its part when other labels come and go (an ingest rebuilds the labels), so a
    model warm-started after new data has never trained on a label it is now measured on."""
    store = bundle.data["user"]
    u, v = bundle.friend_pairs.numpy()
    if "node_id" in store:  # by id; a graph built without the id map hashes its indices
        ids = store.node_id.numpy()
        u, v = ids[u], ids[v]
    low, high = np.minimum(u, v).astype(np.uint64), np.maximum(u, v).astype(np.uint64)
    share = _unit_hash(low, high, seed)
    is_val = share < val_fraction
    is_test = ~is_val & (share < val_fraction + test_fraction)
    return np.flatnonzero(~is_val & ~is_test), np.flatnonzero(is_val), np.flatnonzero(is_test)


def _unit_hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (a, b) pair and seed (splitmix64 finalizer; stable across runs)."""
    with np.errstate(over="ignore"):
        x = a * np.uint64(0x9E3779B97F4A7C15) ^ (b + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0xBF58476D1CE4E5B9))
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def first_seen(bundle: GraphBundle) -> np.ndarray:
    """Per interaction edge, when the pair was first seen (µs); graphs saved before it was kept
    fall back to the last time."""
    store = bundle.data[INTERACTS]
    times = store.edge_first_time if "edge_first_time" in store else store.edge_time
    out: np.ndarray = times.numpy()
    return out


def _windows(first: np.ndarray, held_out_days: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, whether it was first seen in the validation window and in the test window (the last)."""
    window = held_out_days * MICROS_PER_DAY
    end = int(first.max()) if len(first) else 0
    is_test = first > end - window
    return ~is_test & (first > end - 2 * window), is_test


def _window_shares(first: np.ndarray, held_out_days: float) -> tuple[float, float]:
    """The shares of pairs first seen in the validation and the test window."""
    is_val, is_test = _windows(first, held_out_days)
    return float(is_val.mean()), float(is_test.mean())


def split_by_time(
    bundle: GraphBundle,
    held_out_days: float = 14.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """Test: pairs first seen in the last `held_out_days`; validation: in the window before;
    training: the rest. Friend labels are split at random by pair (they carry no time)."""
    is_val, is_test = _windows(first_seen(bundle), held_out_days)
    train_labels, val_labels, test_labels = _random_labels(bundle, seed, val_fraction, test_fraction)
    return Split(
        train_edges=np.flatnonzero(~is_test & ~is_val),
        val_edges=np.flatnonzero(is_val),
        test_edges=np.flatnonzero(is_test),
        train_labels=train_labels,
        val_labels=val_labels,
        test_labels=test_labels,
    )


@dataclass(frozen=True)
class SplitPolicy:
    """How the held-out parts are chosen: `mode` "time", "random" or "auto" (see the module)."""

    mode: str = "auto"
    held_out_days: float = 14.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SPLIT_MODES:
            raise ValueError(f"split mode {self.mode!r} is not one of {', '.join(SPLIT_MODES)}")
        if not self.held_out_days > 0:
            raise ValueError(f"held_out_days must be > 0, got {self.held_out_days}")

    def resolved_mode(self, bundle: GraphBundle) -> str:
        if self.mode != "auto":
            return self.mode
        first = first_seen(bundle)
        span_days = (int(first.max()) - int(first.min())) / MICROS_PER_DAY if len(first) else 0.0
        if span_days < MIN_WINDOWS * self.held_out_days:
            return "random"
        # Dates that span the windows but leave one nearly empty (a world from long ago plus this
        # week's events) would select and gate on a handful of pairs: split at random instead.
        val, test = _window_shares(first, self.held_out_days)
        return "time" if min(val, test) >= MIN_WINDOW_SHARE else "random"

    def apply(self, bundle: GraphBundle) -> Split:
        mode = self.resolved_mode(bundle)
        logger.info("split: %s%s", mode, f" (last {self.held_out_days:g} days held out)" if mode == "time" else "")
        if mode == "time":
            return split_by_time(bundle, self.held_out_days, seed=self.seed)
        return split_indices(bundle, seed=self.seed)


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
