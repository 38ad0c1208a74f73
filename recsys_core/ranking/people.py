"""The people model: proximity candidates ordered by a learned re-ranker, precomputed for every user.

The heuristic (`people_signals.heuristic`) proposes each user's `N_CANDIDATES`; a logistic
regression over every signal (its value, per-user z-score and rank among the candidates) and both
degrees re-orders them. It is fit on an inner carve of the graph it is given: a share of the
edges is hidden and it learns which candidates are the hidden ones, so it never sees the pairs it
is measured on. `PeopleModel.build` then scores every user in blocks and keeps the best `KEEP`
candidates with their logits: the service re-ranks those online (context, the friend head).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import minimize

from recsys_core.datasets.base import carve_pairs, symmetric_pairs
from recsys_core.evaluation.topk import ranking_metrics
from recsys_core.files import write_text_atomically
from recsys_core.ranking import people_signals as signals_of
from recsys_core.ranking.held_out import significantly_better
from recsys_core.ranking.people_signals import F64, FriendGraph

logger = logging.getLogger(__name__)

N_CANDIDATES = 150
KEEP = 100  # candidates stored per user: what the service re-ranks
L2_C = 0.1  # inverse L2 strength of the re-ranker (stable from 0.01 to 1 on LastFM validation)
MAX_FIT_USERS = 1500  # users whose hidden edges the re-ranker learns from (a seeded sample)
BLOCK_CELLS = 4_000_000  # users x users signal cells per block (17 signals of float64: ~0.5 GB)
PEOPLE_FILE = "people_model.npz"
PEOPLE_META = "people_model.json"


def _blocks(users: np.ndarray, n: int) -> list[np.ndarray]:
    size = max(BLOCK_CELLS // max(n, 1), 1)
    return [users[i : i + size] for i in range(0, len(users), size)]


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2_c: float) -> np.ndarray:
    """L2-regularized logistic regression (weights, then the bias), by L-BFGS."""
    x1 = np.hstack([x, np.ones((len(x), 1))])

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x1 @ w
        loss = np.sum(np.logaddexp(0, z) - y * z) + 0.5 / l2_c * (w[:-1] @ w[:-1])
        grad = x1.T @ (1 / (1 + np.exp(-z)) - y)
        grad[:-1] += w[:-1] / l2_c
        return float(loss), grad

    result = minimize(loss_and_grad, np.zeros(x1.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 3000})
    weights: np.ndarray = result.x
    return weights


@dataclass
class FriendRanker:
    """Standardization and logistic weights over `people_signals.design` features."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    feature_names: list[str]
    heuristic_only: bool = False  # nothing to learn from (no hidden friend among the candidates)

    @classmethod
    def fit(cls, friends: sp.csr_matrix, interactions: sp.csr_matrix, seed: int, fraction: float = 0.2) -> FriendRanker:
        """Hide `fraction` of `friends`; learn which of the remaining graph's candidates are the hidden ones."""
        inner, held = carve_pairs(friends, fraction, seed)
        graph = FriendGraph(inner, interactions)
        users = np.flatnonzero(np.diff(held.indptr) > 0)
        if len(users) > MAX_FIT_USERS:
            users = np.sort(np.random.default_rng(seed).choice(users, MAX_FIT_USERS, replace=False))
        xs, ys, n_held, names = [], [], [], None
        for block in _blocks(users, graph.n):
            rows = graph.rows(block)
            cand = signals_of.candidates(graph, block, signals_of.heuristic(rows), N_CANDIDATES)
            xs.append(signals_of.design(graph, rows, block, cand))
            ys.append(held[block].toarray()[np.arange(len(block))[:, None], cand] > 0)
            n_held.append(np.diff(held[block].indptr))
            names = signals_of.feature_names(list(rows))
        width = len(names) if names else 0
        heuristic_only = cls(np.zeros(width), 0.0, np.zeros(width), np.ones(width), names or [], heuristic_only=True)
        if names is None or not any(y.any() for y in ys):
            logger.warning("friend re-ranker: no hidden friend among the candidates; ranking by the heuristic")
            return heuristic_only
        x, y, held_counts = np.vstack(xs), np.vstack(ys), np.concatenate(n_held)
        # Out of fold first: fit on half the users, compare with the heuristic's order on the other half.
        half = np.arange(len(y)) % 2 == 0
        per_user = x.reshape(len(y), -1, x.shape[1])
        trial = cls._fit_on(per_user[half].reshape(-1, x.shape[1]), y[half].ravel(), names)
        logits = (((per_user[~half] - trial.mean) / trial.std) @ trial.weights).reshape((~half).sum(), -1)
        learned = np.argsort(-logits, axis=1, kind="stable")[:, :20]
        recall = np.take_along_axis(y[~half], learned, 1).sum(1) / np.maximum(held_counts[~half], 1)
        recall_heuristic = y[~half][:, :20].sum(1) / np.maximum(held_counts[~half], 1)  # candidates are in its order
        if not significantly_better(recall, recall_heuristic):
            logger.info(
                "friend re-ranker: out of fold recall@20 %.4f vs the heuristic's %.4f; ranking by the heuristic",
                recall.mean(),
                recall_heuristic.mean(),
            )
            return heuristic_only
        ranker = cls._fit_on(x, y.ravel(), names)
        logger.info(
            "friend re-ranker fit on %d candidate pairs of %d users (%d hidden friends among them; out of fold "
            "recall@20 %.4f vs the heuristic's %.4f)",
            y.size,
            len(users),
            int(y.sum()),
            recall.mean(),
            recall_heuristic.mean(),
        )
        return ranker

    @classmethod
    def _fit_on(cls, x: np.ndarray, y: np.ndarray, names: list[str]) -> FriendRanker:
        mean, std = x.mean(0), np.maximum(x.std(0), 1e-9)
        w = _fit_logistic((x - mean) / std, y.astype(np.float64), L2_C)
        return cls(w[:-1], float(w[-1]), mean, std, names)

    def rank(
        self, graph: FriendGraph, users: np.ndarray, keep: int, rows: dict[str, F64] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(len(users), keep) candidates best first and their logits; -1 pads users with fewer.
        `rows`: the users' signal rows when already computed."""
        rows = graph.rows(users) if rows is None else rows
        h = signals_of.heuristic(rows)
        cand = signals_of.candidates(graph, users, h, N_CANDIDATES)
        if self.heuristic_only:
            logits = np.take_along_axis(h, cand, 1)
        else:
            x = (signals_of.design(graph, rows, users, cand) - self.mean) / self.std
            logits = (x @ self.weights + self.bias).reshape(len(users), -1)
        invalid = (cand == users[:, None]) | (
            graph.adjacency[users].toarray()[np.arange(len(users))[:, None], cand] > 0
        )
        logits = np.where(invalid, -np.inf, logits)
        order = np.lexsort((cand, -logits), axis=1)[:, :keep]
        top, scores = np.take_along_axis(cand, order, 1), np.take_along_axis(logits, order, 1)
        top = np.where(np.isfinite(scores), top, -1)
        return top, np.where(np.isfinite(scores), scores, -np.inf).astype(np.float32)

    def strongest(self, n: int = 8) -> dict[str, float]:
        """The largest weights (on standardized features), for the report."""
        order = np.argsort(-np.abs(self.weights))[:n]
        return {self.feature_names[i]: round(float(self.weights[i]), 3) for i in order}


class PeopleModel:
    """Per user, the re-ranker's best `KEEP` candidates (user indices, -1 padded) and their logits."""

    def __init__(self, candidates: NDArray[np.int64], logits: NDArray[np.float32], report: dict[str, object]):
        self.candidates, self.logits, self.report = candidates, logits, report

    @classmethod
    def build(
        cls, friends: sp.csr_matrix, interactions: sp.csr_matrix, seed: int, ranker: FriendRanker | None = None
    ) -> PeopleModel:
        """Fit the re-ranker on an inner carve of `friends` (unless given), then rank every user on the
        whole graph."""
        started = time.perf_counter()
        ranker = ranker or FriendRanker.fit(friends, interactions, seed)
        graph = FriendGraph(friends, interactions)
        n = graph.n
        keep = min(KEEP, max(n - 1, 1))
        candidates = np.full((n, keep), -1, np.int64)
        logits = np.full((n, keep), -np.inf, np.float32)
        done, last = 0, time.perf_counter()
        for block in _blocks(np.arange(n), n):
            top, scores = ranker.rank(graph, block, keep)
            candidates[block, : top.shape[1]], logits[block, : top.shape[1]] = top, scores
            done += len(block)
            if time.perf_counter() - last > 10 and done < n:
                rate = done / (time.perf_counter() - started)
                logger.info(
                    "people model: ranked %d/%d users (%.0f users/s, ETA %.0fs)", done, n, rate, (n - done) / rate
                )
                last = time.perf_counter()
        report: dict[str, object] = {
            "strongest_weights": ranker.strongest(),
            "heuristic_only": ranker.heuristic_only,
            "seconds": round(time.perf_counter() - started, 1),
        }
        return cls(candidates, logits, report)

    def of(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        keep = self.candidates[user] >= 0
        return self.candidates[user][keep], self.logits[user][keep]

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PEOPLE_FILE
        np.savez(path, allow_pickle=False, candidates=self.candidates, logits=self.logits)
        write_text_atomically(directory / PEOPLE_META, json.dumps(self.report, indent=2, default=float))
        return path

    @classmethod
    def load(cls, directory: Path) -> PeopleModel:
        directory = Path(directory)
        with np.load(directory / PEOPLE_FILE, allow_pickle=False) as arrays:
            candidates, logits = arrays["candidates"], arrays["logits"]
        return cls(candidates, logits, json.loads((directory / PEOPLE_META).read_text()))


# -- on a split: measured on the held-out friend labels, then refit on the whole graph ---------------

MEASURED_HEURISTICS = ("common_neighbours", "adamic_adar", "katz", "ppr_0.1", "taste_cosine")


@dataclass
class PeopleFit:
    served: PeopleModel  # every social edge: what the service re-ranks
    report: dict[str, object]


def adjacency(edges: np.ndarray, n: int) -> sp.csr_matrix:
    """The symmetric 0/1 friend graph of (2, E) user-index edges (either direction, or both)."""
    return symmetric_pairs(edges[0], edges[1], n)


def measure(
    ranker: FriendRanker, graph: FriendGraph, held: sp.csr_matrix, k: int = 20, max_users: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Recall and NDCG at k of held-out friendships: the people model and the plain heuristics, from
    one computation of each tested user's signal rows."""
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    if not len(users):
        return {}
    tops: dict[str, list[np.ndarray]] = {}
    for block in _blocks(users, graph.n):
        rows = graph.rows(block)
        tops.setdefault("people model", []).append(ranker.rank(graph, block, k, rows)[0])
        rows["heuristic"] = signals_of.heuristic(rows)
        for name in (*MEASURED_HEURISTICS, "heuristic"):
            tops.setdefault(name, []).append(signals_of.candidates(graph, block, rows[name], k))
    truth = held[users]
    return {name: ranking_metrics(np.vstack(parts), truth, k) for name, parts in tops.items()}


def fit_people_model(
    social: np.ndarray,
    train_social: np.ndarray,
    n_users: int,
    interactions: sp.csr_matrix,
    train_interactions: sp.csr_matrix,
    held: dict[str, np.ndarray],
    seed: int,
) -> PeopleFit:
    """`social` / `train_social`: (2, E) edges of the whole graph and of the training graph (held-out
    label pairs removed); `held`: part -> (2, L) positive held-out pairs. The re-ranker is fit on an
    inner carve of the training graph and measured there on the held-out pairs; the served model ranks
    every user on the whole graph with it."""
    started = time.perf_counter()
    train_friends = adjacency(train_social, n_users)
    ranker = FriendRanker.fit(train_friends, train_interactions, seed)
    graph = FriendGraph(train_friends, train_interactions)
    report: dict[str, object] = {
        part: measure(ranker, graph, adjacency(pairs, n_users), seed=seed) for part, pairs in held.items()
    }
    del graph
    # Served: every social edge and interaction; the re-ranker as fit on the training graph's inner carve.
    served = PeopleModel.build(adjacency(social, n_users), interactions, seed, ranker)
    report |= {"strongest_weights": ranker.strongest(), "heuristic_only": ranker.heuristic_only}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return PeopleFit(served, report)
