"""The comparison table: GraphRec vs every baseline vs the oracle, on one split, in one run.

Baselines are trained here on exactly the training pairs the GNN saw, and all models are
scored by `protocol.evaluate_places` / `evaluate_friends` on the same held-out part.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import torch

from recsys_core import baselines, social
from recsys_core.evaluation import protocol
from recsys_core.features import USER_LAYOUT
from recsys_core.graph import INTERACTS, SOCIAL, GraphBundle
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.synthetic.config import PreferenceWeights
from recsys_core.synthetic.preference import Tastes, Traits, preference_scores
from recsys_core.training.ranking import local_matrix, score_city
from recsys_core.training.split import Split, training_graph

logger = logging.getLogger(__name__)


@dataclass
class Comparison:
    places: pd.DataFrame
    friends: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)

    def headline(self, model: str = "graphrec") -> dict[str, float]:
        overall = self.places[self.places["tier"] == "all"].set_index("model")
        out = {f"{m}_recall@20": float(overall.loc[m, "recall@20"]) for m in overall.index}
        friends = self.friends.set_index("model")
        out.update({f"{m}_compat_auc": float(friends.loc[m, "compat_roc_auc"]) for m in friends.index})
        return out


@dataclass
class WorldTruth:
    """Generator-side tables for the oracle (synthetic worlds only)."""

    users: pa.Table
    places: pa.Table
    interactions: pa.Table
    weights: PreferenceWeights = field(default_factory=PreferenceWeights)


def _graphrec_scorer(model: GraphRec, inputs: GraphInputs, truth: protocol.PlaceTruth):
    with torch.no_grad():
        z = model.embed(inputs)

    def score(city, users, places):
        exclude = local_matrix(truth.seen_user, truth.seen_place, users, places)
        return score_city(model, z, inputs, city, users, places, exclude)

    return score, z


def _baseline_scorer(model):
    def score(city, users, places):
        return model.score(users)[:, places]

    return score


def _oracle_scorer(world: WorldTruth, user_ids: np.ndarray, place_ids: np.ndarray):
    tastes = Tastes.from_table(world.users.sort_by("user_id"))
    traits = Traits.from_table(world.places.sort_by("place_id"))
    if not (np.array_equal(tastes.ids, user_ids) and np.array_equal(traits.ids, place_ids)):
        raise ValueError("oracle tables do not match the graph's nodes")

    def score(city, users, places):
        return preference_scores(tastes.subset(users), traits.subset(places), world.weights)

    return score


def compare(
    bundle: GraphBundle,
    split: Split,
    models: dict[str, GraphRec],
    part: str = "test",
    world: WorldTruth | None = None,
    baseline_epochs: int = 20,
    seed: int = 0,
) -> Comparison:
    """Evaluate `models` (name -> trained GraphRec) against popularity, MF-BPR, LightGCN, the
    item-item filter and (with `world`) the oracle; friends against the link heuristics."""
    seconds: dict[str, float] = {}
    any_model = next(iter(models.values()))
    train_graph = training_graph(bundle, split)
    inputs = GraphInputs.from_hetero(train_graph, any_model.config.use_social, any_model.config.time_decay)
    user_city, place_city = inputs.city["user"].numpy(), inputs.city["place"].numpy()
    truth = protocol.PlaceTruth.from_split(bundle, split, part, user_city, place_city)
    n_users, n_places = inputs.num_nodes["user"], inputs.num_nodes["place"]
    ei = bundle.data[INTERACTS].edge_index.numpy()
    train = sp.csr_matrix(
        (np.ones(len(split.train_edges), np.float32), (ei[0, split.train_edges], ei[1, split.train_edges])),
        shape=(n_users, n_places),
    )

    scorers, embeddings = {}, {}
    for name, model in models.items():
        scorers[name], embeddings[name] = _graphrec_scorer(model, inputs, truth)
    fitted = {
        "popularity": baselines.Popularity(),
        "mf_bpr": baselines.MatrixFactorizationBPR(epochs=baseline_epochs, seed=seed),
        "lightgcn": baselines.LightGCN(epochs=baseline_epochs, seed=seed),
        "item_item_filter": baselines.ItemItemFilter(),
    }
    for name, model in fitted.items():
        started = time.perf_counter()
        model.fit(train)
        seconds[f"fit_{name}"] = round(time.perf_counter() - started, 1)
        scorers[name] = _baseline_scorer(model)
        logger.info("fitted %s in %.1fs", name, seconds[f"fit_{name}"])
    if world is not None:
        scorers["oracle"] = _oracle_scorer(world, bundle.data["user"].node_id.numpy(), bundle.data["place"].node_id.numpy())
    started = time.perf_counter()
    places = protocol.evaluate_places(scorers, truth)
    seconds["evaluate_places"] = round(time.perf_counter() - started, 1)

    friends = _compare_friends(bundle, split, part, models, embeddings, inputs, train_graph, world)
    return Comparison(places=places, friends=friends, seconds=seconds)


def _compare_friends(bundle, split, part, models, embeddings, inputs, train_graph, world) -> pd.DataFrame:
    held = split.val_labels if part == "val" else split.test_labels
    if len(held) == 0:
        return pd.DataFrame(columns=["model", "compat_roc_auc", "compat_pr_auc", "attend_auc_among_compatible"])
    u, v = bundle.friend_pairs[:, torch.from_numpy(held)].numpy()
    compat = bundle.friend_compat[torch.from_numpy(held)].numpy()
    attend = bundle.friend_attend[torch.from_numpy(held)].numpy()
    x = inputs.x["user"]
    scores: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, model in models.items():
            z = embeddings[name]["user"]
            c, a = model.friend_scores(z[u], z[v], x[u], x[v])
            scores[name] = np.stack([c.numpy(), a.numpy()], axis=1)
    n_users = inputs.num_nodes["user"]
    if SOCIAL in train_graph.edge_types:
        adj = protocol.friend_adjacency(train_graph[SOCIAL].edge_index.numpy(), n_users)
        pairs = np.stack([u, v], axis=1)
        scores["common_neighbours"] = baselines.common_neighbours(adj, pairs)
        scores["adamic_adar"] = baselines.adamic_adar(adj, pairs)
    if x.shape[1]:
        fine = x[:, USER_LAYOUT["fine_pref"]].numpy()
        scores["feature_cosine"] = baselines.feature_cosine(fine, np.stack([u, v], axis=1))
    if world is not None:
        # The generator's own attendance probability: the ceiling for attendance AUC.
        ids = bundle.data["user"].node_id.numpy()
        unit = social.unit_rows(np.asarray(x[:, USER_LAYOUT["fine_pref"]]))
        overlap = social.pair_cosine(unit, u, v)
        co = social.lookup_pair_counts(social.co_attendance_counts(world.interactions), ids[u], ids[v])
        oracle_compat = social.compatibility_label(overlap, co).astype(np.float64)
        scores["oracle"] = np.stack([oracle_compat, social.attendance_probability(overlap, co)], axis=1)
    return protocol.evaluate_friends(scores, compat, attend)


def summary_markdown(comparison: Comparison) -> str:
    """The tables a person reads: places by tier, then friends."""
    cols = ["model", "tier", "users", "recall@5", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit@20",
            "coverage@20", "novelty@20", "diversity@20"]
    places = comparison.places[[c for c in cols if c in comparison.places.columns]]
    return (
        "### Places (held-out test pairs, full ranking within the home city)\n\n"
        + places.to_markdown(index=False, floatfmt=".4f")
        + "\n\n### Friends (held-out label pairs)\n\n"
        + comparison.friends.to_markdown(index=False, floatfmt=".4f")
    )

