"""The quality gate's last question: is the new model worse than the one being served now?

Beating the baselines is not enough to replace a version: the new one must not rank worse for
the users it would take over. Both are scored on the same held-out pairs under the same
exclusions, fairly to each:
- the served version was refit on every pair of its own graph, so pairs it has seen are neither
  counted (a held-out pair it trained on) nor ranked (a place it knows the user went to);
- the new model is its place model as selected on the split's training pairs (never the test part);
- users the served version does not know are left out (it cannot rank for them), and places it
  does not know it cannot recommend: that is the new model's honest advantage;
- pairs a served version showed the user (its impressions, from the feedback events) are neither
  counted nor ranked: a visit that followed a recommendation was caused by the ranking that showed
  it, so counting it would score the served version on its own exposure. Without this, a retrain on
  the loop's own visits loses to the live version by construction (0.78 vs 0.90 in the daemon demo).
The gate fails only when the new model's Recall@20 is below the served one's by more than
`SIGNIFICANCE` paired standard errors over users; a tie passes (the new model knows newer data).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recsys_core.evaluation import metrics, protocol
from recsys_core.evaluation.served_ranking import local_matrix
from recsys_core.evaluation.split import Split
from recsys_core.graph import INTERACTS, GraphBundle
from recsys_core.ranking.parts import F32

logger = logging.getLogger(__name__)

SIGNIFICANCE = 2.0  # paired standard errors the new model may not fall behind by
MIN_PAIRS = 100  # held-out pairs both can be judged on, below which nothing is concluded
K = 20


@dataclass(frozen=True)
class ServedComparison:
    passed: bool
    reason: str
    users: int = 0
    pairs: int = 0
    candidate_recall: float = float("nan")
    served_recall: float = float("nan")
    difference: float = float("nan")  # candidate - served
    standard_error: float = float("nan")  # of the paired difference, over users

    def figures(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class ScoresAll(Protocol):
    """A place model scoring users against every place (`PlaceBlend`)."""

    @property
    def n_users(self) -> int: ...

    @property
    def n_items(self) -> int: ...

    def dense(self, rows: np.ndarray) -> F32: ...


def _positions(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Index of each id in the sorted array `known`, -1 where it is not there."""
    at = np.clip(np.searchsorted(known, ids), 0, max(len(known) - 1, 0))
    found = (known[at] == ids) if len(known) else np.zeros(len(ids), bool)
    return np.where(found, at, -1)


def _cities(bundle: GraphBundle, node: str) -> np.ndarray:
    """Each node's city: the first feature column (`GraphInputs.city`), 0 for data without features."""
    store = bundle.data[node]
    x = store.x if "x" in store else None
    if x is None or x.shape[1] == 0:
        return np.zeros(int(store.num_nodes), dtype=np.int64)
    cities: np.ndarray = x[:, 0].long().numpy()
    return cities


def per_user_recall(scorers: dict[str, protocol.BlockScorer], truth: protocol.PlaceTruth) -> dict[str, np.ndarray]:
    """Recall@20 per tested user (in `truth.blocks()` order) for each scorer."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in scorers}
    for city, users, places in truth.blocks():
        exclude = local_matrix(truth.seen_user, truth.seen_place, users, places)
        held = local_matrix(truth.held_user, truth.held_place, users, places)
        for name, scorer in scorers.items():
            scores = np.asarray(scorer(city, users, places), dtype=np.float64)
            ranked = metrics.top_k_excluding(scores, exclude, min(K, len(places)))
            out[name].append(metrics.ranking_report_of_top(ranked, held, ks=(K,), ndcg_ks=())[f"recall@{K}"])
    return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in out.items()}


def compare_with_served(
    bundle: GraphBundle,
    split: Split,
    candidate: ScoresAll,
    served: ScoresAll,
    served_graph: GraphBundle,
    part: str = "test",
    max_users: int = protocol.MAX_TESTED_USERS,
    shown: tuple[np.ndarray, np.ndarray] | None = None,
) -> ServedComparison:
    """`candidate`: the new place model as selected (fit on `split`'s training pairs); `served`: the
    live version's place model as served, of `served_graph` (the graph it was refit on); `shown`:
    (user ids, place ids) of the pairs served versions showed (impressions), left out of the judging."""
    new_users, new_places = bundle.data["user"].node_id.numpy(), bundle.data["place"].node_id.numpy()
    old_users, old_places = served_graph.data["user"].node_id.numpy(), served_graph.data["place"].node_id.numpy()
    if (served.n_users, served.n_items) != (len(old_users), len(old_places)):
        return ServedComparison(True, "not compared: the served place model does not fit its own graph")
    user_in_served, place_in_served = _positions(new_users, old_users), _positions(new_places, old_places)
    old_edges = served_graph.data[INTERACTS].edge_index.numpy()
    # The served version's pairs, in the new graph's indices (pairs of users or places it lacks drop out).
    seen_user = _positions(old_users[old_edges[0]], new_users)
    seen_place = _positions(old_places[old_edges[1]], new_places)
    keep = (seen_user >= 0) & (seen_place >= 0)
    served_seen = seen_user[keep] * len(new_places) + seen_place[keep]
    truth = protocol.PlaceTruth.from_split(
        bundle, split, part, _cities(bundle, "user"), _cities(bundle, "place"), max_users
    )
    held_key = truth.held_user * len(new_places) + truth.held_place
    shown_user, shown_place = (
        (_positions(shown[0], new_users), _positions(shown[1], new_places))
        if shown is not None
        else (np.zeros(0, np.int64),) * 2
    )
    exposed = (shown_user >= 0) & (shown_place >= 0)
    shown_user, shown_place = shown_user[exposed], shown_place[exposed]
    was_shown = np.isin(held_key, shown_user * len(new_places) + shown_place)
    judged = (user_in_served[truth.held_user] >= 0) & ~np.isin(held_key, served_seen) & ~was_shown
    if judged.sum() < MIN_PAIRS:
        return ServedComparison(
            True,
            f"not compared: {int(judged.sum())} held-out pairs the served version has not seen, fewer than {MIN_PAIRS}",
            pairs=int(judged.sum()),
        )
    truth = dataclasses.replace(
        truth,
        held_user=truth.held_user[judged],
        held_place=truth.held_place[judged],
        seen_user=np.concatenate([truth.seen_user, seen_user[keep], shown_user]),
        seen_place=np.concatenate([truth.seen_place, seen_place[keep], shown_place]),
    )

    def new_score(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        return candidate.dense(users)[:, places]

    def served_score(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        rows = served.dense(user_in_served[users])
        columns = place_in_served[places]
        scores = np.full((len(users), len(places)), -np.inf)
        known = columns >= 0
        scores[:, known] = rows[:, columns[known]]
        return scores

    recall = per_user_recall({"candidate": new_score, "served": served_score}, truth)
    # a user whose held-out pairs are all in other cities (travel) has no recall in their home city
    rated = np.isfinite(recall["candidate"]) & np.isfinite(recall["served"])
    recall = {name: values[rated] for name, values in recall.items()}
    difference = recall["candidate"] - recall["served"]
    n = len(difference)
    se = float(difference.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    mean = float(difference.mean())
    passed = bool(mean >= -SIGNIFICANCE * se)
    verdict = "not worse than" if passed else f"worse by more than {SIGNIFICANCE:g} standard errors than"
    result = ServedComparison(
        passed=passed,
        reason=f"{part} Recall@20 {recall['candidate'].mean():.4f} vs served {recall['served'].mean():.4f} "
        f"on {int(judged.sum())} pairs it has not seen"
        + (f" ({int(was_shown.sum())} shown by a served version left out)" if was_shown.any() else "")
        + f": {verdict} the served version",
        users=n,
        pairs=int(judged.sum()),
        candidate_recall=float(recall["candidate"].mean()),
        served_recall=float(recall["served"].mean()),
        difference=mean,
        standard_error=se,
    )
    logger.info("versus served: %s", result.reason)
    return result
