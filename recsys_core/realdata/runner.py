"""The benchmark run: carve validation, tune and compare on it, refit, rank everyone, write files.

Phases (each timed in the report, all inside ``time_budget_min``):
  1. load the training files; carve 20% of each user's items (and for LastFM 20% of the
     friendships) as validation, the same shape as the held-out test splits;
  2. the model's graph filter (GF-CF form: linear + ideal low-pass on the normalized item
     graph, over count-weighted interactions): one SVD on the carve, its cut-off and weight
     tuned on validation; then refit on the full training file and every user ranked, so the
     output files exist early and the measured cost of a full ranking becomes the budget's reserve;
  3. for LastFM, friends: a proximity heuristic proposes candidates and a logistic re-ranker
     (fit on an inner carve) orders them (``friends.py``); written before anything optional;
  4. baselines on the carve: popularity, the linear item-item filter, MF-BPR and LightGCN (the
     two trained ones get shares of the budget when the reserve allows);
  5. the model's factor part: a bag of iALS fits (``baselines/ials.py``);
  6. GraphRec (featureless, id embeddings, early-stopped on the validation pairs) with what is
     left;
  7. the blend: the per-user z-scores of filter, iALS and GraphRec summed with weights chosen on
     validation (the report shows each part alone, each pair and the blend);
  8. if the blend beats the filter alone on validation and the reserve still fits, iALS is
     refit on the full file and every user is ranked again with the blend.
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
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.baselines._common import row_standardize
from recsys_core.baselines.ials import BaggedALS
from recsys_core.baselines.item_filter import ItemItemFilter
from recsys_core.baselines.lightgcn import LightGCN
from recsys_core.baselines.mf import MatrixFactorizationBPR
from recsys_core.baselines.popularity import Popularity
from recsys_core.datasets import LOADERS
from recsys_core.datasets.base import InteractionDataset, carve_pairs, carve_validation, relative_count_weights
from recsys_core.files import READABLE_BY_ALL, write_text_atomically
from recsys_core.realdata import friends as friend_model
from recsys_core.realdata.budget import Budget, peak_rss_mb
from recsys_core.realdata.graphrec_places import fit_graphrec
from recsys_core.realdata.topk import ScoreFn, ranking_metrics, top_k

logger = logging.getLogger(__name__)

# Blend weights tried on validation, next to the graph filter's 1 (each part's scores z-scored per user).
IALS_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
GRAPHREC_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
IALS_REFIT_SAFETY = 1.5  # the full file is 25% larger than the carve, and the machine may be busier
FILTER_ALPHAS = (0.1, 0.3, 0.5, 1.0)  # weight of the ideal low-pass next to the linear filter
FILTER_CUTS = (0.25, 0.5, 1.0)  # ideal low-pass cut-offs tried, as fractions of filter_k
RESERVE_SAFETY = 1.5  # a re-ranking may be this much slower than the first one
RESERVE_FLOOR_S = 20.0


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
    share_ials: float = 0.15
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

    def __init__(
        self,
        train: sp.csr_matrix,
        val: sp.csr_matrix,
        config: BenchmarkConfig,
        results: dict[str, dict[str, float] | dict[str, str]],
    ):
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

    def scores(self, score_fn: ScoreFn) -> np.ndarray:
        return np.vstack([score_fn(self.users[i : i + 1024]) for i in range(0, len(self.users), 1024)])

    def record(self, name: str, scores: np.ndarray) -> dict[str, float]:
        result = self.metrics(scores)
        self.results[name] = result
        logger.info("validation %-46s %s", name, result)
        return result


def _tune_graph_filter(
    config: BenchmarkConfig, train: sp.csr_matrix, check: _Validation
) -> tuple[float, int, np.ndarray, dict[str, float]]:
    """One SVD with the largest cut-off; (alpha, k) chosen on validation. Returns the chosen
    setting, its validation scores and the sweep."""
    k_max = _filter_k(config, train.shape[1])
    fitted = _graph_filter(config, 1.0, k_max).fit(train)
    linear = check.scores(fitted.truncated(0.0, 0).score)
    best: tuple[float, float, int, np.ndarray | None] = (-1.0, 0.0, 0, None)
    sweep: dict[str, float] = {}
    for cut in sorted({max(int(k_max * f), 1) for f in FILTER_CUTS}):
        low = check.scores(fitted.truncated(1.0, cut).low_pass_scores)
        for alpha in FILTER_ALPHAS:
            scores = linear + alpha * low
            recall = check.metrics(scores)[f"recall@{check.k}"]
            sweep[f"k={cut} alpha={alpha}"] = recall
            if recall > best[0]:
                best = (recall, alpha, cut, scores)
        del low
    _, alpha, cut, best_scores = best
    if best_scores is None:
        raise RuntimeError("graph filter: no setting got a validation recall (no validation pairs?)")
    logger.info("graph filter: ideal low-pass k=%d alpha=%.2f chosen on validation", cut, alpha)
    return alpha, cut, best_scores, sweep


def _rank_and_write(
    config: BenchmarkConfig, dataset: InteractionDataset, full: sp.csr_matrix, score_fn: ScoreFn, label: str
) -> float:
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


def run_benchmark(config: BenchmarkConfig, already_spent_s: float = 0.0) -> dict[str, Any]:
    """``already_spent_s``: seconds of the budget used before the call (the CLI counts its start-up)."""
    torch.manual_seed(config.seed)
    budget = Budget(config.time_budget_min * 60.0, started=time.perf_counter() - already_spent_s)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    k = config.k
    report: dict[str, Any] = {  # the JSON report
        "dataset": config.dataset,
        "config": asdict(config),
        "validation": {},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
    }

    with budget.phase("load"):
        dataset: InteractionDataset = LOADERS[config.dataset](config.data_dir)
        full = dataset.binary()
        train, val = carve_validation(full, config.validation_fraction, config.seed)
        counts_train = dataset.counts_on(train)
        report["data"] = dataset.summary() | {"validation_pairs": int(val.nnz)}
        if k > dataset.n_items:
            raise ValueError(f"k={k} exceeds the number of items ({dataset.n_items})")
    check = _Validation(train, val, config, report["validation"])

    with budget.phase("graph_filter"):
        alpha, cut, filter_val, sweep = _tune_graph_filter(config, relative_count_weights(counts_train), check)
        check.record("model: graph_filter_only", filter_val)
        report["graph_filter"] = {
            "alpha": alpha,
            "k": cut,
            "input": "relative count weights",
            "validation_recall_by_setting": sweep,
        }

    with budget.phase("final_ranking_filter"):
        final_filter = _graph_filter(config, alpha, cut).fit(relative_count_weights(dataset.interactions))
        rank_seconds = _rank_and_write(config, dataset, full, final_filter.score, "ranking (graph filter)")
        report["written_by"] = "graph filter"
        report["cold_users"] = int((np.diff(full.indptr) == 0).sum())

    if dataset.friends is not None:  # dense n x n signals: seconds for LastFM's 1,892 users, refused above 5,000
        with budget.phase("friends"):
            report["friends"] = _friends(dataset, config, out)

    # What must still fit after the optional phases: the blend search and a re-ranking.
    blend_seconds = (len(IALS_WEIGHTS) + 2 * len(GRAPHREC_WEIGHTS)) * 2 * float(np.mean(check.metric_seconds))
    budget.reserve_s = RESERVE_SAFETY * (rank_seconds + blend_seconds) + RESERVE_FLOOR_S
    report["reserve_seconds"] = round(budget.reserve_s, 1)

    with budget.phase("baselines"):
        check.record("popularity", check.scores(Popularity().fit(train).score))
        check.record(
            "linear_item_filter", check.scores(ItemItemFilter(alpha=0.0, k=0, batch_users=512).fit(train).score)
        )
        for name, cls, share in (
            ("mf_bpr", MatrixFactorizationBPR, config.share_mf),
            ("lightgcn", LightGCN, config.share_lightgcn),
        ):
            if not budget.can_afford(share):
                report["validation"][name] = {"skipped": "time budget"}
                continue
            model = cls(epochs=1000, time_budget_s=budget.allot(share), seed=config.seed).fit(train)
            check.record(name, check.scores(model.score))

    parts = {"graph_filter": row_standardize(filter_val)}
    del filter_val
    ials_seconds = 0.0
    if budget.can_afford(config.share_ials):
        with budget.phase("ials"):
            t0 = time.perf_counter()
            ials = BaggedALS(seed=config.seed, time_budget_s=budget.allot(config.share_ials)).fit(counts_train)
            ials_seconds = time.perf_counter() - t0
            parts["ials"] = row_standardize(check.scores(ials.score))
            check.record("model: ials_bag_only", parts["ials"])
            report["ials"] = {"fits": len(ials.fits), "seconds": round(ials_seconds, 1)}
            # A blend with iALS needs it refit on the full file before the re-ranking.
            budget.reserve_s += IALS_REFIT_SAFETY * ials_seconds
            report["reserve_seconds"] = round(budget.reserve_s, 1)
    else:
        report["validation"]["model: ials_bag_only"] = {"skipped": "time budget"}

    with budget.phase("graphrec_train"):
        # Two embedding passes and the last evaluation come after the trainer's own deadline.
        graphrec = fit_graphrec(
            dataset.with_interactions(full),
            val,
            max(0.8 * budget.allot(config.share_graphrec), 1.0),
            config.seed,
            config.d_model,
        )
        report["graphrec_training"] = {
            "steps": len(graphrec.result.history),
            "best_step": graphrec.result.best_step,
            "best_val_recall@20_trainer": round(graphrec.result.best_val_recall, 5),
            "stopped_because": graphrec.result.stopped_because,
            "seconds": round(graphrec.result.seconds, 1),
        }
        parts["graphrec"] = row_standardize(check.scores(graphrec.validation.score))
        check.record("model: graphrec_gnn_only", parts["graphrec"])

    with budget.phase("blend"):
        weights, blend = _tune_blend(parts, check)
        report["blend"] = blend
        logger.info("blend weights %s -> validation recall@%d %.4f", weights, k, blend["validation_recall"])
        del parts
    # The search is done: what is left to keep is the re-ranking (and iALS's refit for it).
    budget.reserve_s = (
        RESERVE_SAFETY * rank_seconds + RESERVE_FLOOR_S + (IALS_REFIT_SAFETY * ials_seconds if weights["ials"] else 0.0)
    )
    report["reserve_seconds_after_blend"] = round(budget.reserve_s, 1)

    if any(w > 0 for name, w in weights.items() if name != "graph_filter") and budget.remaining() > budget.reserve_s:
        with budget.phase("final_ranking_blend"):
            # The refit stops adding fits once the re-ranking's own reserve is all that is left.
            refit_s = budget.remaining() - RESERVE_SAFETY * rank_seconds - RESERVE_FLOOR_S
            final_ials = (
                BaggedALS(seed=config.seed, n_fits=len(ials.fits), time_budget_s=refit_s).fit(dataset.interactions)
                if weights["ials"]
                else None
            )
            models: dict[str, ScoreFn] = {
                "graph_filter": final_filter.score,
                "graphrec": graphrec.full.score,
            }
            if final_ials is not None:
                models["ials"] = final_ials.score

            def blended(rows: np.ndarray) -> np.ndarray:
                total = sum(w * row_standardize(models[name](rows)) for name, w in weights.items() if w > 0)
                if not isinstance(total, np.ndarray):  # sum() of no arrays is 0
                    raise RuntimeError("the blend has no part with a positive weight")
                return total

            _rank_and_write(config, dataset, full, blended, "ranking (blend)")
            report["written_by"] = f"blend {weights}"
    elif any(w > 0 for name, w in weights.items() if name != "graph_filter"):
        report["written_by"] = "graph filter (no time left to re-rank with the blend)"

    report["phases"] = budget.phases
    report["total_seconds"] = round(budget.elapsed(), 1)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_text_atomically(out / "report.json", json.dumps(report, indent=2), mode=READABLE_BY_ALL)
    logger.info(
        "benchmark %s done in %.0fs (places written by the %s); files in %s",
        config.dataset,
        budget.elapsed(),
        report["written_by"],
        out,
    )
    return report


def _tune_blend(parts: dict[str, np.ndarray], check: _Validation) -> tuple[dict[str, float], dict[str, object]]:
    """Weights of the z-scored parts (the filter's fixed at 1) chosen on validation by coordinate
    search: iALS's weight next to the filter, then GraphRec's next to both (and, for the report,
    GraphRec's next to the filter alone). Each evaluation ranks every validation user, so the
    search tries about 20 settings rather than the whole grid.

    The report keeps the best blend of every subset of parts, so each part's contribution shows."""
    key = f"recall@{check.k}"
    tried: dict[tuple[float, float], dict[str, float]] = {}

    def recall(w_ials: float, w_gnn: float) -> float:
        if (w_ials, w_gnn) not in tried:
            weights = {"graph_filter": 1.0, "ials": w_ials, "graphrec": w_gnn}
            blend = sum(w * parts[name] for name, w in weights.items() if w > 0)
            if not isinstance(blend, np.ndarray):  # sum() of no arrays is 0; the filter's weight is 1
                raise RuntimeError("the blend has no part with a positive weight")
            tried[w_ials, w_gnn] = check.metrics(blend)
        return tried[w_ials, w_gnn][key]

    best_ials = max(
        IALS_WEIGHTS if "ials" in parts else (0.0,), key=lambda w: recall(w, 0.0)
    )  # ties: the smaller weight
    for w_gnn in GRAPHREC_WEIGHTS:
        recall(best_ials, w_gnn)
        if best_ials > 0:
            recall(0.0, w_gnn)  # GraphRec next to the filter alone, for the report
    best_of: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for (w_ials, w_gnn), metrics in tried.items():
        weights = {"graph_filter": 1.0, "ials": w_ials, "graphrec": w_gnn}
        label = " + ".join(name for name, w in weights.items() if w > 0)
        if label not in best_of or metrics[key] > best_of[label][0][key]:
            best_of[label] = (metrics, weights)
    for label, (metrics, weights) in best_of.items():
        if label != "graph_filter":
            check.results[f"model: {label} (best weights)"] = metrics
            logger.info("validation %-46s %s %s", f"model: {label}", weights, metrics)
    best_metrics, best_weights = max(best_of.values(), key=lambda r: r[0][key])
    check.results["model: blend"] = best_metrics
    return best_weights, {
        "weights": best_weights,
        "validation_recall": best_metrics[key],
        "settings_tried": len(tried),
        "validation_recall_by_parts": {label: {"recall": m[key], "weights": w} for label, (m, w) in best_of.items()},
    }


def _friends(dataset: InteractionDataset, config: BenchmarkConfig, out: Path) -> dict[str, object]:
    """The friend baselines and the re-ranker on carved friendships, then everyone ranked on the full graph."""
    k = config.k
    friends = dataset.friends
    if friends is None:
        raise ValueError(f"dataset {dataset.name} has no friendship graph")
    known, held = carve_pairs(friends, config.validation_fraction, config.seed)
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    taste = friend_model.taste_cosine(dataset.interactions)
    # Fit on an inner carve of the known graph: the validation pairs are never seen by the fit.
    ranker = friend_model.FriendRanker.fit(
        known, dataset.interactions, config.seed + 1, config.validation_fraction, taste
    )
    carved = friend_model.FriendSignals.build(known, dataset.interactions, taste)
    exclude = (
        known[users]
        + sp.csr_matrix((np.ones(len(users)), (np.arange(len(users)), users)), shape=(len(users), known.shape[0]))
    ).tocsr()

    def evaluate(scores: np.ndarray) -> dict[str, float]:
        return ranking_metrics(top_k(lambda r: scores[r], np.arange(len(users)), exclude, k), held[users], k)

    results = {
        name: evaluate(carved.matrices[name][users])
        for name in ("common_neighbours", "adamic_adar", "katz", "ppr_0.1", "taste_cosine", "heuristic")
    }
    results["model: friend re-ranker"] = evaluate(ranker.score(carved, users))
    for name, value in results.items():
        logger.info("friends validation %-40s %s", name, value)
    del carved

    final = friend_model.FriendRanker.fit(
        friends, dataset.interactions, config.seed + 1, config.validation_fraction, taste
    )
    signals = friend_model.FriendSignals.build(friends, dataset.interactions, taste)
    all_users = np.arange(dataset.n_users)
    exclude_all = (friends + sp.identity(dataset.n_users, format="csr")).tocsr()
    top = top_k(lambda r: final.score(signals, r), all_users, exclude_all, k, label="friend ranking")
    _write_top(out / f"friends_top{k}.txt", dataset.user_ids, dataset.user_ids[top])
    return {"validation": results, "strongest_weights": final.strongest()}


def _write_top(path: Path, ids: np.ndarray, top_ids: np.ndarray) -> None:
    """Written beside and renamed over, so a reader (or a run stopped mid-way) never sees half a file."""
    lines = (f"{user} " + " ".join(map(str, row)) + "\n" for user, row in zip(ids, top_ids, strict=True))
    write_text_atomically(path, "".join(lines), prefix=f".{path.name}-", mode=READABLE_BY_ALL)
    logger.info("wrote %s (%d lines)", path, len(ids))
