"""The benchmark run: carve validation, tune and compare on it, refit, rank everyone, write files.

Phases (each timed in the report, all inside ``time_budget_min``):
  1. load the training files; carve 20% of each user's items (and for LastFM 20% of the
     friendships) as validation, the same shape as the held-out test splits;
  2. the model's graph filter (GF-CF form: linear + ideal low-pass on the normalized item
     graph): one SVD on the carve, its cut-off and weight tuned on validation; then refit on
     the full training file and every user ranked, so the output files exist early and the
     measured cost of a full ranking becomes the budget's reserve;
  3. baselines on the carve: popularity, the linear item-item filter, MF-BPR and LightGCN (the
     two trained ones get shares of the budget when the reserve allows);
  4. GraphRec (featureless, id embeddings, early-stopped on the validation pairs) with what is
     left, then the blend weight between GraphRec and the filter chosen on validation (the
     report shows each part alone and the blend);
  5. for LastFM, friends: proximity features blended by a logistic model fit on carved pairs;
  6. if the blend beats the filter alone on validation and the reserve still fits, every user
     is ranked again with the blend (GraphRec embedding the full graph) and the files replaced.
Training items are excluded; users without history get the popularity ranking.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.baselines.item_filter import ItemItemFilter
from recsys_core.baselines.lightgcn import LightGCN
from recsys_core.baselines.mf import MatrixFactorizationBPR
from recsys_core.baselines.popularity import Popularity
from recsys_core.benchmark import friends as friend_model
from recsys_core.benchmark.budget import Budget, peak_rss_mb
from recsys_core.benchmark.graphrec_places import fit_graphrec
from recsys_core.benchmark.ranking import ranking_metrics, row_standardize, top_k
from recsys_core.datasets import LOADERS
from recsys_core.datasets.base import InteractionDataset, carve_pairs, carve_validation

logger = logging.getLogger(__name__)

BLEND_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)  # weight of GraphRec next to the filter
FILTER_ALPHAS = (0.1, 0.3, 0.5, 1.0)  # weight of the ideal low-pass next to the linear filter
FILTER_CUTS = (0.25, 0.5, 1.0)  # ideal low-pass cut-offs tried, as fractions of filter_k
RESERVE_SAFETY = 1.5  # a re-ranking may be this much slower than the first one
RESERVE_FLOOR_S = 20.0
FRIENDS_RESERVE_S = 60.0


@dataclass(frozen=True)
class BenchmarkConfig:
    dataset: str
    data_dir: str
    out: str
    k: int = 20
    seed: int = 0
    time_budget_min: float = 15.0
    validation_fraction: float = 0.2
    eval_users: int = 4000  # validation users scored per method (a seeded sample)
    filter_k: int = 256  # largest ideal low-pass cut-off (singular vectors) of the graph filter
    d_model: int = 64
    share_graphrec: float = 0.50
    share_mf: float = 0.06
    share_lightgcn: float = 0.08


def _sample_users(truth: sp.csr_matrix, n: int, seed: int) -> np.ndarray:
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if len(users) > n:
        users = np.sort(np.random.default_rng(seed).choice(users, n, replace=False))
    return users


def _graph_filter(config: BenchmarkConfig, alpha: float, k: int) -> ItemItemFilter:
    return ItemItemFilter(alpha=alpha, k=k, svd="randomized", seed=config.seed, batch_users=512)


def _filter_k(config: BenchmarkConfig, n_items: int) -> int:
    return min(config.filter_k, max(n_items // 8, 8))


class _Validation:
    """The sampled validation users, their held-out items, and the results table."""

    def __init__(self, train: sp.csr_matrix, val: sp.csr_matrix, config: BenchmarkConfig, results: dict):
        self.train, self.k, self.results = train, config.k, results
        self.users = _sample_users(val, config.eval_users, config.seed)
        self.truth = val[self.users]
        self.metric_seconds: list[float] = []  # what one evaluation costs, for the budget's reserve

    def metrics(self, scores: np.ndarray) -> dict[str, float]:
        t0 = time.perf_counter()
        rows = np.arange(len(self.users))
        out = ranking_metrics(top_k(lambda r: scores[r], rows, self.train[self.users], self.k), self.truth, self.k)
        self.metric_seconds.append(time.perf_counter() - t0)
        return out

    def scores(self, score_fn) -> np.ndarray:
        return np.vstack([score_fn(self.users[i : i + 1024]) for i in range(0, len(self.users), 1024)])

    def record(self, name: str, scores: np.ndarray) -> dict[str, float]:
        self.results[name] = self.metrics(scores)
        logger.info("validation %-46s %s", name, self.results[name])
        return self.results[name]


def _tune_graph_filter(config: BenchmarkConfig, train: sp.csr_matrix, check: _Validation) -> tuple[float, int, np.ndarray, dict]:
    """One SVD with the largest cut-off; (alpha, k) chosen on validation. Returns the chosen
    setting, its validation scores and the sweep."""
    k_max = _filter_k(config, train.shape[1])
    fitted = _graph_filter(config, 1.0, k_max).fit(train)
    linear = check.scores(fitted.truncated(0.0, 0).score)
    best, sweep = (-1.0, 0.0, 0, None), {}
    for cut in sorted({max(int(k_max * f), 1) for f in FILTER_CUTS}):
        low = check.scores(fitted.truncated(1.0, cut).low_pass_scores)
        for alpha in FILTER_ALPHAS:
            scores = linear + alpha * low
            recall = check.metrics(scores)[f"recall@{check.k}"]
            sweep[f"k={cut} alpha={alpha}"] = recall
            if recall > best[0]:
                best = (recall, alpha, cut, scores)
        del low
    _, alpha, cut, scores = best
    logger.info("graph filter: ideal low-pass k=%d alpha=%.2f chosen on validation", cut, alpha)
    return alpha, cut, scores, sweep


def _rank_and_write(config: BenchmarkConfig, dataset: InteractionDataset, full: sp.csr_matrix, score_fn, label: str) -> float:
    """Rank every user (cold users: popularity), write places_top{k}.txt atomically; seconds taken."""
    t0 = time.perf_counter()
    popularity = Popularity().fit(full).item_scores
    has_history = np.diff(full.indptr) > 0

    def scores(rows: np.ndarray) -> np.ndarray:
        s = score_fn(rows)
        s[~has_history[rows]] = popularity
        return s

    top = top_k(scores, np.arange(dataset.n_users), full, config.k, chunk=1024, label=label)
    _write_top(Path(config.out) / f"places_top{config.k}.txt", dataset.user_ids, dataset.item_ids[top])
    return time.perf_counter() - t0


def run_benchmark(config: BenchmarkConfig, already_spent_s: float = 0.0) -> dict:
    """``already_spent_s``: seconds of the budget used before the call (the CLI counts its start-up)."""
    torch.manual_seed(config.seed)
    budget = Budget(config.time_budget_min * 60.0, started=time.perf_counter() - already_spent_s)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    k = config.k
    report: dict = {"dataset": config.dataset, "config": asdict(config), "validation": {}, "machine": {
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}}

    with budget.phase("load"):
        dataset: InteractionDataset = LOADERS[config.dataset](config.data_dir)
        full = dataset.binary()
        train, val = carve_validation(full, config.validation_fraction, config.seed)
        report["data"] = dataset.summary() | {"validation_pairs": int(val.nnz)}
        if k > dataset.n_items:
            raise ValueError(f"k={k} exceeds the number of items ({dataset.n_items})")
    check = _Validation(train, val, config, report["validation"])

    with budget.phase("graph_filter"):
        alpha, cut, filter_val, sweep = _tune_graph_filter(config, train, check)
        check.record("model: graph_filter_only", filter_val)
        report["graph_filter"] = {"alpha": alpha, "k": cut, "validation_recall_by_setting": sweep}

    with budget.phase("final_ranking_filter"):
        final_filter = _graph_filter(config, alpha, cut).fit(full)
        rank_seconds = _rank_and_write(config, dataset, full, final_filter.score, "ranking (graph filter)")
        report["written_by"] = "graph filter"
        report["cold_users"] = int((np.diff(full.indptr) == 0).sum())
    # What must still fit after the optional phases: the blend sweep, friends, a re-ranking.
    blend_seconds = len(BLEND_GRID) * 2 * float(np.mean(check.metric_seconds))
    budget.reserve_s = RESERVE_SAFETY * (rank_seconds + blend_seconds) + RESERVE_FLOOR_S
    if dataset.friends is not None:
        budget.reserve_s += FRIENDS_RESERVE_S
    report["reserve_seconds"] = round(budget.reserve_s, 1)

    with budget.phase("baselines"):
        check.record("popularity", check.scores(Popularity().fit(train).score))
        check.record("linear_item_filter", check.scores(ItemItemFilter(alpha=0.0, k=0, batch_users=512).fit(train).score))
        for name, cls, share in (("mf_bpr", MatrixFactorizationBPR, config.share_mf), ("lightgcn", LightGCN, config.share_lightgcn)):
            if not budget.can_afford(share):
                report["validation"][name] = {"skipped": "time budget"}
                continue
            model = cls(epochs=1000, time_budget_s=budget.allot(share), seed=config.seed).fit(train)
            check.record(name, check.scores(model.score))

    with budget.phase("graphrec_train"):
        # Two embedding passes and the last evaluation come after the trainer's own deadline.
        graphrec = fit_graphrec(dataset.with_interactions(full), val, max(0.8 * budget.allot(config.share_graphrec), 1.0),
                                config.seed, config.d_model)
        report["graphrec_training"] = {
            "steps": len(graphrec.result.history), "best_step": graphrec.result.best_step,
            "best_val_recall@20_trainer": round(graphrec.result.best_val_recall, 5),
            "stopped_because": graphrec.result.stopped_because, "seconds": round(graphrec.result.seconds, 1),
        }
        gnn_val = check.scores(graphrec.validation.score)
        check.record("model: graphrec_gnn_only", gnn_val)

    with budget.phase("blend"):
        z_f, z_g = row_standardize(filter_val), row_standardize(gnn_val)
        sweep, best_w, best = {}, 0.0, None
        for w in BLEND_GRID:
            m = check.metrics((1 - w) * z_f + w * z_g)
            sweep[str(w)] = m[f"recall@{k}"]
            if best is None or m[f"recall@{k}"] > best[f"recall@{k}"]:
                best_w, best = w, m
        report["validation"]["model: graphrec (gnn + graph filter blend)"] = best
        report["blend"] = {"graphrec_weight": best_w, "validation_recall_by_weight": sweep}
        logger.info("blend: GraphRec weight %.2f -> validation recall@%d %.4f", best_w, k, best[f"recall@{k}"])
        del filter_val, gnn_val, z_f, z_g

    if dataset.friends is not None:
        with budget.phase("friends"):
            report["friends"] = _friends(dataset, graphrec.full.user, config, out)

    if best_w > 0 and budget.remaining() > budget.reserve_s:
        with budget.phase("final_ranking_blend"):
            def blended(rows: np.ndarray) -> np.ndarray:
                return (1 - best_w) * row_standardize(final_filter.score(rows)) + best_w * row_standardize(graphrec.full.score(rows))

            _rank_and_write(config, dataset, full, blended, "ranking (blend)")
            report["written_by"] = f"graphrec blend (GraphRec weight {best_w})"
    elif best_w > 0:
        report["written_by"] = "graph filter (no time left to re-rank with the blend)"

    report["phases"] = budget.phases
    report["total_seconds"] = round(budget.elapsed(), 1)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    logger.info("benchmark %s done in %.0fs (places written by the %s); files in %s", config.dataset, budget.elapsed(),
                report["written_by"], out)
    return report


def _friends(dataset: InteractionDataset, embeddings: np.ndarray, config: BenchmarkConfig, out: Path) -> dict:
    """Tune the friend blend on carved friendships, then rank everyone on the full friend graph."""
    k = config.k
    known, held = carve_pairs(dataset.friends, config.validation_fraction, config.seed)
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    carved = friend_model.PairFeatures.build(known, dataset.interactions, embeddings)

    def evaluate(scores: np.ndarray) -> dict[str, float]:
        exclude = (known[users] + sp.csr_matrix((np.ones(len(users)), (np.arange(len(users)), users)), shape=(len(users), known.shape[0]))).tocsr()
        return ranking_metrics(top_k(lambda r: scores[r], np.arange(len(users)), exclude, k), held[users], k)

    results = {
        "common_neighbours": evaluate(carved.matrices["common_neighbours"][users]),
        "adamic_adar": evaluate(carved.matrices["adamic_adar"][users]),
        "personalized_pagerank": evaluate(carved.matrices["personalized_pagerank"][users]),
        "katz": evaluate(carved.matrices["katz"][users]),
        "taste_cosine": evaluate(carved.matrices["taste_cosine"][users]),
    }
    blend = friend_model.fit_friend_blend(carved, known, held, config.seed)
    # The blend is fit on the held-out pairs themselves; its validation figure comes from a
    # second, disjoint carve so the number is not measured on what it was fit to.
    known2, held2 = carve_pairs(known, config.validation_fraction, config.seed + 1)
    features2 = friend_model.PairFeatures.build(known2, dataset.interactions, embeddings)
    blend2 = friend_model.fit_friend_blend(features2, known2, held2, config.seed)
    results["model: friend_blend (fit on an inner carve)"] = evaluate(blend2.score(carved, users))
    for name, value in results.items():
        logger.info("friends validation %-40s %s", name, value)

    full = friend_model.PairFeatures.build(dataset.friends, dataset.interactions, embeddings)
    all_users = np.arange(dataset.n_users)
    exclude = (dataset.friends + sp.identity(dataset.n_users, format="csr")).tocsr()
    top = top_k(lambda r: blend.score(full, r), all_users, exclude, k, label="friend ranking")
    _write_top(out / f"friends_top{k}.txt", dataset.user_ids, dataset.user_ids[top])
    return {"validation": results, "weights": blend.as_dict()}


def _write_top(path: Path, ids: np.ndarray, top_ids: np.ndarray) -> None:
    """Written beside and renamed over, so a reader (or a run stopped mid-way) never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as f:
        for user, row in zip(ids, top_ids):
            f.write(f"{user} " + " ".join(map(str, row)) + "\n")
    os.replace(partial, path)
    logger.info("wrote %s (%d lines)", path, len(ids))
