"""The comparison table: GraphRec vs every baseline vs the oracle, on one split, in one run.

Baselines are trained here on exactly the training pairs the GNN saw, and all models are
scored by `protocol.evaluate_places` / `evaluate_friends` on the same held-out part.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData

from recsys_core import baselines, social
from recsys_core.baselines.ials import ImplicitALS
from recsys_core.evaluation import protocol
from recsys_core.evaluation.served_ranking import local_matrix, score_city
from recsys_core.evaluation.split import Split, training_graph
from recsys_core.features import FeatureLayouts
from recsys_core.graph import INTERACTS, SOCIAL, GraphBundle
from recsys_core.model.checkpoint import save_checkpoint
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.synthetic.config import PreferenceWeights, WorldConfig
from recsys_core.synthetic.hidden import TruePreference
from recsys_core.synthetic.preference import Tastes, Traits, preference_scores

logger = logging.getLogger(__name__)


PEOPLE_COLUMNS = ["part", "model", "recall@20", "ndcg@20"]
BASELINE_WEIGHTS = "weights"  # <comparison>/weights/<name>: a trained baseline's checkpoint
PEOPLE_PARTS = {"validation": "val", "test": "test"}  # the people model's report -> the table's parts


def people_table(report: dict[str, object] | None) -> pd.DataFrame:
    """The people model's held-out friendship ranking (`ranking.people.measure`, per part: the
    served people model and each heuristic) as rows (part, model, recall@20, ndcg@20)."""
    rows = []
    for key, part in PEOPLE_PARTS.items():
        measured = (report or {}).get(key) or {}
        if isinstance(measured, dict):
            rows += [{"part": part, "model": name, **figures} for name, figures in measured.items()]
    return pd.DataFrame(rows, columns=PEOPLE_COLUMNS)


@dataclass
class Comparison:
    """Per-part tables: `places` rows are (part, model, tier), `friends` rows are (part, model) label
    AUCs, `people` rows are (part, model) Recall@20 of held-out friendships (where the social edges
    are friendships and the people model's order is served)."""

    places: pd.DataFrame
    friends: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)
    people: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PEOPLE_COLUMNS))
    # Trained baselines kept with the comparison (saved, not loaded back), so that the next
    # evaluation can continue them instead of training them again (`training.warm_start`).
    baseline_models: dict[str, GraphRec] = field(default_factory=dict)

    @staticmethod
    def baseline_directory(directory: Path, name: str) -> Path:
        """Where a saved comparison keeps baseline `name`'s checkpoint."""
        return Path(directory) / BASELINE_WEIGHTS / name

    def people_metric(self, part: str, model: str, metric: str = "recall@20") -> float:
        rows = self.people[(self.people["part"] == part) & (self.people["model"] == model)]
        return float(rows[metric].iloc[0]) if len(rows) else float("nan")

    def place_metric(self, part: str, model: str, metric: str = "recall@20", tier: str = "all") -> float:
        rows = self.places[
            (self.places["part"] == part) & (self.places["model"] == model) & (self.places["tier"] == tier)
        ]
        return float(rows[metric].iloc[0]) if len(rows) else float("nan")

    def friend_metric(self, part: str, model: str, metric: str = "compat_roc_auc") -> float:
        rows = self.friends[(self.friends["part"] == part) & (self.friends["model"] == model)]
        return float(rows[metric].iloc[0]) if len(rows) else float("nan")

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.places.to_parquet(directory / "places.parquet", index=False)
        self.friends.to_parquet(directory / "friends.parquet", index=False)
        self.people.to_parquet(directory / "people.parquet", index=False)
        (directory / "seconds.json").write_text(json.dumps(self.seconds))
        for name, model in self.baseline_models.items():
            save_checkpoint(model, self.baseline_directory(directory, name))
        return directory / "places.parquet"

    @classmethod
    def load(cls, directory: Path) -> Comparison:
        people = directory / "people.parquet"  # absent in comparisons saved before it existed
        return cls(
            places=pd.read_parquet(directory / "places.parquet"),
            friends=pd.read_parquet(directory / "friends.parquet"),
            seconds=json.loads((directory / "seconds.json").read_text()),
            people=pd.read_parquet(people) if people.exists() else people_table(None),
        )


@dataclass
class WorldTruth:
    """Generator-side tables for the oracle (synthetic worlds only)."""

    users: pa.Table
    places: pa.Table
    interactions: pa.Table
    weights: PreferenceWeights = field(default_factory=PreferenceWeights)
    config: WorldConfig | None = None  # world v2's hidden signal is regenerated from it
    day: float | None = None  # the day v2's oracle scores (default: the middle of the weeks)


class _Baseline(Protocol):
    """What the comparison needs of a baseline recommender."""

    def fit(self, train: sp.csr_matrix) -> object: ...

    def score(self, users: np.ndarray) -> np.ndarray: ...


def _graphrec_scorer(
    model: GraphRec, z: dict[str, torch.Tensor], inputs: GraphInputs, truth: protocol.PlaceTruth
) -> protocol.BlockScorer:
    def score(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        exclude = local_matrix(truth.seen_user, truth.seen_place, users, places)
        return score_city(model, z, inputs, city, users, places, exclude)

    return score


def _baseline_scorer(model: _Baseline) -> protocol.BlockScorer:
    def score(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        return model.score(users)[:, places]

    return score


class _DenseModel(Protocol):
    """A model scoring users against every place (the place model, `ranking.PlaceBlend`)."""

    def dense(self, rows: np.ndarray) -> np.ndarray: ...


def _blend_scorer(blend: _DenseModel) -> protocol.BlockScorer:
    """The place model's definition (`PlaceBlend.dense`), restricted to the block's city."""

    def score(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        return blend.dense(users)[:, places]

    return score


def _oracle_scorer(world: WorldTruth, user_ids: np.ndarray, place_ids: np.ndarray) -> protocol.BlockScorer:
    tastes = Tastes.from_table(world.users.sort_by("user_id"))
    traits = Traits.from_table(world.places.sort_by("place_id"))
    if not (np.array_equal(tastes.ids, user_ids) and np.array_equal(traits.ids, place_ids)):
        raise ValueError("oracle tables do not match the graph's nodes")

    config = world.config
    if config is not None and config.realism.enabled:
        # Everything the generator sampled from: observed and hidden parts, drift, opening days.
        true = TruePreference(config, world.users.sort_by("user_id"), world.places.sort_by("place_id"))
        day = world.day if world.day is not None else config.weeks * 7 / 2

        def score_v2(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
            return true.scores(users, places, day)

        return score_v2

    def score(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        return preference_scores(tastes.subset(users), traits.subset(places), world.weights)

    return score


def compare(
    bundle: GraphBundle,
    split: Split,
    models: dict[str, GraphRec],
    parts: tuple[str, ...] = ("val", "test"),
    world: WorldTruth | None = None,
    baseline_budget_s: float = 90.0,
    seed: int = 0,
    place_models: dict[str, _DenseModel] | None = None,
    max_users: int = protocol.MAX_TESTED_USERS,
    people_report: dict[str, object] | None = None,
) -> Comparison:
    """Evaluate `models` (name -> trained GraphRec) and `place_models` (name -> a blend fit on the
    split's training pairs) against popularity, MF-BPR, LightGCN, the item-item filter, iALS and (with
    `world`) the oracle; friends against the link heuristics. Places are measured on at most
    `max_users` users per part (a seeded sample)."""
    seconds: dict[str, float] = {}
    any_model = next(iter(models.values()))
    train_graph = training_graph(bundle, split)
    inputs = GraphInputs.from_hetero(train_graph, any_model.config.use_social, any_model.config.time_decay)
    for trained in models.values():
        trained.check_fits(bundle.vocabulary, inputs)
    user_city, place_city = inputs.city["user"].numpy(), inputs.city["place"].numpy()
    n_users, n_places = inputs.num_nodes["user"], inputs.num_nodes["place"]
    ei = bundle.data[INTERACTS].edge_index.numpy()
    train = sp.csr_matrix(
        (np.ones(len(split.train_edges), np.float32), (ei[0, split.train_edges], ei[1, split.train_edges])),
        shape=(n_users, n_places),
    )

    with torch.no_grad():
        embeddings = {name: model.embed(inputs) for name, model in models.items()}
    fitted: dict[str, _Baseline] = {
        "popularity": baselines.Popularity(),
        "mf_bpr": baselines.MatrixFactorizationBPR(seed=seed, time_budget_s=baseline_budget_s),
        "lightgcn": baselines.LightGCN(seed=seed, time_budget_s=baseline_budget_s),
        "item_item_filter": baselines.ItemItemFilter(seed=seed),
        "ials": ImplicitALS(seed=seed),
    }
    for name, model in fitted.items():
        started = time.perf_counter()
        model.fit(train)
        seconds[f"fit_{name}"] = round(time.perf_counter() - started, 1)
        logger.info("fitted %s in %.1fs", name, seconds[f"fit_{name}"])
    places, friends = [], []
    for part in parts:
        truth = protocol.PlaceTruth.from_split(bundle, split, part, user_city, place_city, max_users=max_users)
        scorers = {name: _graphrec_scorer(model, embeddings[name], inputs, truth) for name, model in models.items()}
        scorers.update({name: _blend_scorer(blend) for name, blend in (place_models or {}).items()})
        scorers.update({name: _baseline_scorer(model) for name, model in fitted.items()})
        if world is not None:
            node_ids = bundle.data["user"].node_id.numpy(), bundle.data["place"].node_id.numpy()
            scorers["oracle"] = _oracle_scorer(world, *node_ids)
        started = time.perf_counter()
        places.append(protocol.evaluate_places(scorers, truth).assign(part=part))
        friends.append(
            _compare_friends(bundle, split, part, models, embeddings, inputs, train_graph, world).assign(part=part)
        )
        seconds[f"evaluate_{part}"] = round(time.perf_counter() - started, 1)
    return Comparison(
        places=pd.concat(places, ignore_index=True),
        friends=pd.concat(friends, ignore_index=True),
        seconds=seconds,
        people=people_table(people_report),
    )


def _compare_friends(
    bundle: GraphBundle,
    split: Split,
    part: str,
    models: dict[str, GraphRec],
    embeddings: dict[str, dict[str, torch.Tensor]],
    inputs: GraphInputs,
    train_graph: HeteroData,
    world: WorldTruth | None,
) -> pd.DataFrame:
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
    fine_pref = FeatureLayouts.for_vocabulary(bundle.vocabulary).user["fine_pref"]
    if x.shape[1]:
        fine = x[:, fine_pref].numpy()
        scores["feature_cosine"] = baselines.feature_cosine(fine, np.stack([u, v], axis=1))
    if world is not None and not (world.config is not None and world.config.edges_are_friendships):
        # The generator's own attendance probability, the ceiling for attendance AUC (v1's rule; v2's
        # friendships follow hidden tastes).
        ids = bundle.data["user"].node_id.numpy()
        unit = social.unit_rows(np.asarray(x[:, fine_pref]))
        overlap = social.pair_cosine(unit, u, v)
        co = social.lookup_pair_counts(social.co_attendance_counts(world.interactions), ids[u], ids[v])
        oracle_compat = social.compatibility_label(overlap, co).astype(np.float64)
        scores["oracle"] = np.stack([oracle_compat, social.attendance_probability(overlap, co)], axis=1)
    return protocol.evaluate_friends(scores, compat, attend)


def summary_markdown(comparison: Comparison, part: str = "test") -> str:
    """The tables a person reads: places by tier, then friends, for one part."""
    cols = [
        "model",
        "tier",
        "users",
        "recall@5",
        "recall@10",
        "recall@20",
        "ndcg@10",
        "ndcg@20",
        "mrr",
        "hit@20",
        "coverage@20",
        "novelty@20",
        "diversity@20",
    ]
    places = comparison.places[comparison.places["part"] == part]
    friends = comparison.friends[comparison.friends["part"] == part].drop(columns="part")
    people = comparison.people[comparison.people["part"] == part].drop(columns="part")
    return (
        f"### Places ({part} pairs, full ranking within the home city)\n\n"
        + places[[c for c in cols if c in places.columns]].to_markdown(index=False, floatfmt=".4f")
        + f"\n\n### Friends ({part} label pairs)\n\n"
        + friends.to_markdown(index=False, floatfmt=".4f")
        + (
            f"\n\n### People ({part} friendships: Recall@20 of the held-out ones)\n\n"
            + people.to_markdown(index=False, floatfmt=".4f")
            if len(people)
            else ""
        )
    )


PLACE_MARGIN = 0.05  # the served place model must beat the strongest simple baseline by 5 % (relative)
FRIEND_HEURISTICS = ("common_neighbours", "adamic_adar", "feature_cosine")
PEOPLE_HEURISTICS = ("common_neighbours", "adamic_adar", "ppr_0.1")  # what the served people order must beat
PEOPLE_MODEL = "people model"  # the served people order, in the people table
PLACE_MODEL = "place_model"  # the blend the service ranks places with, in the comparison table


def quality_gate(comparison: Comparison, model: str = "graphrec", part: str = "val") -> tuple[bool, dict[str, float]]:
    """Does the served model clear the bar to be published? Its places (the place model where the
    table has one, else `model`) Recall@20 >= (1 + margin) x max(popularity, MF-BPR); its people:
    where the table has the people model (friendship data, whose order is served), Recall@20 of
    held-out friendships above common neighbours, Adamic-Adar and personalized PageRank, else
    `model`'s friend ROC-AUC above every link heuristic; on the validation part."""
    places_by = PLACE_MODEL if PLACE_MODEL in set(comparison.places["model"]) else model
    ours = comparison.place_metric(part, places_by)
    floor = max(comparison.place_metric(part, "popularity"), comparison.place_metric(part, "mf_bpr"))
    places_ok = bool(ours >= (1 + PLACE_MARGIN) * floor)
    figures = {f"{part}_recall@20_{places_by}": ours, f"{part}_recall@20_required": (1 + PLACE_MARGIN) * floor}
    if PEOPLE_MODEL in set(comparison.people["model"]):
        friend = comparison.people_metric(part, PEOPLE_MODEL)
        heuristics = [comparison.people_metric(part, m) for m in PEOPLE_HEURISTICS]
        ours_key, theirs_key = f"{part}_people_recall@20", f"{part}_people_recall@20_best_heuristic"
    else:
        friend = comparison.friend_metric(part, model)
        heuristics = [comparison.friend_metric(part, m) for m in FRIEND_HEURISTICS]
        ours_key, theirs_key = f"{part}_friend_auc_{model}", f"{part}_friend_auc_best_heuristic"
    best_heuristic = max((h for h in heuristics if not np.isnan(h)), default=float("nan"))
    friends_ok = bool(np.isnan(best_heuristic) or friend > best_heuristic)
    return places_ok and friends_ok, figures | {ours_key: friend, theirs_key: best_heuristic}
