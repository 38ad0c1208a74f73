"""One evaluation protocol for the model, every baseline and the oracle, on the same split.

Places: full ranking over the user's home city (places of other cities are not candidates),
training pairs excluded (and validation pairs too when scoring the test part, for every
model alike), per-user metrics averaged overall, by history tier (`metrics.HISTORY_TIERS`:
zero-history, cold, warm and hot users by training-pair count), and over the held-out pairs at
new places (no training pair at all) as a row of its own. Friends: ROC-AUC / PR-AUC of held-out label pairs, and the
attendance AUC over the held-out compatible pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_core.evaluation import metrics
from recsys_core.evaluation.served_ranking import local_matrix
from recsys_core.evaluation.split import Split
from recsys_core.features import FeatureLayouts
from recsys_core.graph import INTERACTS, GraphBundle

# (city, users, places) -> (len(users), len(places)) scores; higher is better.
BLOCK_CELLS = 8_000_000  # scores per block: 64 MB as float64, a few of them alive at a time
MAX_TESTED_USERS = 10_000  # per part; the synthetic benchmark's 10,000-user world is evaluated whole
BlockScorer = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
NEW_PLACES = "new_places"  # the row over held-out pairs at places without a training pair


@dataclass
class PlaceTruth:
    """Everything the place protocol needs from a graph and its split."""

    users: np.ndarray
    places: np.ndarray
    user_city: np.ndarray
    place_city: np.ndarray
    seen_user: np.ndarray
    seen_place: np.ndarray
    held_user: np.ndarray
    held_place: np.ndarray
    train_counts: np.ndarray
    place_popularity: np.ndarray
    place_features: np.ndarray | None

    @classmethod
    def from_split(
        cls,
        bundle: GraphBundle,
        split: Split,
        part: str,
        user_city: np.ndarray,
        place_city: np.ndarray,
        max_users: int = MAX_TESTED_USERS,
        seed: int = 0,
    ) -> PlaceTruth:
        """The part's held-out pairs; of more than `max_users` users with some, a seeded sample of
        `max_users` (the same for every model): enough for figures within about 0.005 of the full
        count, at a third of the cost on a 30,000-user world."""
        ei = bundle.data[INTERACTS].edge_index.numpy()
        seen = split.train_edges if part == "val" else np.concatenate([split.train_edges, split.val_edges])
        held = split.val_edges if part == "val" else split.test_edges
        tested = np.unique(ei[0, held])
        if len(tested) > max_users:
            chosen = np.random.default_rng(seed).choice(tested, size=max_users, replace=False)
            held = held[np.isin(ei[0, held], chosen)]
        n_users, n_places = int(bundle.data["user"].num_nodes), int(bundle.data["place"].num_nodes)
        x = bundle.data["place"].x.numpy() if "x" in bundle.data["place"] else None
        tags = FeatureLayouts.for_vocabulary(bundle.vocabulary).place["fine_tag_vector"]
        has_tags = x is not None and tags.stop > tags.start and x.shape[1] >= tags.stop
        return cls(
            users=np.arange(n_users),
            places=np.arange(n_places),
            user_city=user_city,
            place_city=place_city,
            seen_user=ei[0, seen],
            seen_place=ei[1, seen],
            held_user=ei[0, held],
            held_place=ei[1, held],
            train_counts=np.bincount(ei[0, split.train_edges], minlength=n_users),
            place_popularity=np.bincount(ei[1, split.train_edges], minlength=n_places).astype(np.float64),
            place_features=x[:, tags] if has_tags and x is not None else None,  # diversity: of the tags
        )

    def blocks(self, max_cells: int | None = None) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(city, users, places) blocks of tested users against their city's places, a city's users
        split so no block's score matrix exceeds `max_cells` (a one-city world of 30k users and 40k
        places would otherwise be scored as one 10 GB matrix)."""
        max_cells = max_cells or BLOCK_CELLS
        tested = np.unique(self.held_user)
        out: list[tuple[int, np.ndarray, np.ndarray]] = []
        for city in np.unique(self.user_city[tested]):
            u = tested[self.user_city[tested] == city]
            p = self.places[self.place_city == city]
            if len(p):
                rows = max(max_cells // len(p), 1)
                out.extend((int(city), u[start : start + rows], p) for start in range(0, len(u), rows))
        return out


def evaluate_places(
    scorers: dict[str, BlockScorer],
    truth: PlaceTruth,
    ks: Sequence[int] = (5, 10, 20),
    ndcg_ks: Sequence[int] = (10, 20),
) -> pd.DataFrame:
    """One row per (model, tier): ranking metrics plus coverage, novelty and diversity."""
    tiers = metrics.history_tiers(truth.train_counts)
    new_place = truth.place_popularity == 0
    rows = []
    for name, scorer in scorers.items():
        per_user: dict[str, list[np.ndarray]] = {}
        new_per_user: dict[str, list[np.ndarray]] = {}
        users_with_new = 0
        users_seen, tops, n_items, cities = [], [], 0, set()
        for city, u, p in truth.blocks():
            exclude = local_matrix(truth.seen_user, truth.seen_place, u, p)
            held = local_matrix(truth.held_user, truth.held_place, u, p)
            scores = np.asarray(scorer(city, u, p), dtype=np.float64)
            ranked = metrics.top_k_excluding(scores, exclude, metrics.report_depth(len(p), ks, ndcg_ks))
            report = metrics.ranking_report_of_top(ranked, held, ks=ks, ndcg_ks=ndcg_ks)
            for key, values in report.items():
                per_user.setdefault(key, []).append(values)
            held_new = held.multiply(new_place[p][None, :]).tocsr()  # held-out pairs at new places only
            held_new.eliminate_zeros()
            users_with_new += int((np.diff(held_new.indptr) > 0).sum())
            for key, values in metrics.ranking_report_of_top(ranked, held_new, ks=ks, ndcg_ks=ndcg_ks).items():
                new_per_user.setdefault(key, []).append(values)
            users_seen.append(u)
            depth = min(max(ks), len(p))
            top = np.full((len(u), max(ks)), -1, dtype=np.int64)  # -1 pads lists of small cities
            top[:, :depth] = p[ranked[:, :depth]]  # a prefix: the ranking's order is total (ties by index)
            tops.append(top)
            if city not in cities:  # a city's users may come in several blocks; its places count once
                cities.add(city)
                n_items += len(p)
        merged = {k: np.concatenate(v) for k, v in per_user.items()}
        merged_new = {k: np.concatenate(v) for k, v in new_per_user.items()}
        users = np.concatenate(users_seen)
        topk = np.concatenate(tops)
        extras = {
            "coverage@20": metrics.catalogue_coverage(topk, n_items),
            "novelty@20": metrics.novelty(topk, truth.place_popularity),
            "diversity@20": metrics.intra_list_diversity(topk, truth.place_features)
            if truth.place_features is not None
            else float("nan"),
        }
        for tier in ("all", *(t for t, _, _ in metrics.HISTORY_TIERS)):
            mask = None if tier == "all" else tiers[users] == tier
            summary = metrics.summarize(merged, mask)
            rows.append(
                {
                    "model": name,
                    "tier": tier,
                    "users": int(len(users) if mask is None else mask.sum()),
                    **summary,
                    **(extras if tier == "all" else {}),
                }
            )
        rows.append({"model": name, "tier": NEW_PLACES, "users": users_with_new, **metrics.summarize(merged_new)})
    return pd.DataFrame(rows)


def evaluate_friends(scores: dict[str, np.ndarray], compat: np.ndarray, attend: np.ndarray) -> pd.DataFrame:
    """ROC-AUC and PR-AUC of compatibility; attendance AUC among compatible pairs.

    `scores[name]` is either (n,) compatibility scores, or (n, 2) compatibility and
    attendance scores for models that predict both.
    """
    rows = []
    positive = compat == 1
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        comp = s if s.ndim == 1 else s[:, 0]
        row = {
            "model": name,
            "compat_roc_auc": metrics.roc_auc(compat, comp),
            "compat_pr_auc": metrics.pr_auc(compat, comp),
        }
        att = comp if s.ndim == 1 else s[:, 1]
        row["attend_auc_among_compatible"] = metrics.roc_auc(attend[positive], att[positive])
        rows.append(row)
    return pd.DataFrame(rows)


def friend_adjacency(pairs: np.ndarray, n_users: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency from (2, E) directed or undirected pairs."""
    u, v = pairs
    a = sp.csr_matrix((np.ones(len(u), np.float32), (u, v)), shape=(n_users, n_users))
    a = a + a.T
    a.data[:] = 1.0
    return a.tocsr()
