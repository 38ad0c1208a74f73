"""The benchmark run: carve validation, tune and compare on it, refit, rank everyone, write files.

Phases (each timed in the report, all inside ``time_budget_min``):
  1. load the training files; carve 20% of each user's items (and for LastFM 20% of the
     friendships) as validation, the same shape as the held-out test splits;
  2. baselines on the carve: popularity, a linear item-item graph filter, MF-BPR, LightGCN
     (the two trained ones get fixed shares of the budget);
  3. the model on the carve: GraphRec (featureless, id embeddings, early-stopped on the
     validation pairs) and its spectral graph filter (linear + ideal low-pass on the
     normalized item graph, GF-CF form); the blend weight between the two is chosen on
     validation, and the report shows each part alone and the blend;
  4. final: the filter is refit on the full training file, GraphRec embeds the full graph
     with its validation-selected weights, every user is ranked (training items excluded;
     users without history get the popularity ranking) and the files are written.
"""

from __future__ import annotations

import json
import logging
import os
import platform
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

BLEND_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # weight of GraphRec next to the filter


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
    filter_k: int = 256  # ideal low-pass cut-off (singular vectors) of the spectral filter
    filter_alpha: float = 0.3
    d_model: int = 64
    share_graphrec: float = 0.30
    share_mf: float = 0.06
    share_lightgcn: float = 0.08


def _sample_users(truth: sp.csr_matrix, n: int, seed: int) -> np.ndarray:
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if len(users) > n:
        users = np.sort(np.random.default_rng(seed).choice(users, n, replace=False))
    return users


def _spectral_filter(config: BenchmarkConfig, n_items: int) -> ItemItemFilter:
    k = min(config.filter_k, max(n_items // 8, 8))
    return ItemItemFilter(alpha=config.filter_alpha, k=k, svd="randomized", seed=config.seed, batch_users=512)


def run_benchmark(config: BenchmarkConfig) -> dict:
    torch.manual_seed(config.seed)
    budget = Budget(config.time_budget_min * 60.0)
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
    users = _sample_users(val, config.eval_users, config.seed)
    val_u = val[users]
    results = report["validation"]

    def evaluate(name: str, score_fn) -> np.ndarray:
        scores = np.vstack([score_fn(users[i : i + 1024]) for i in range(0, len(users), 1024)])
        results[name] = ranking_metrics(top_k(lambda r: scores[r], np.arange(len(users)), train[users], k), val_u, k)
        logger.info("validation %-28s %s", name, results[name])
        return scores

    with budget.phase("baselines"):
        evaluate("popularity", Popularity().fit(train).score)
        evaluate("linear_item_filter", ItemItemFilter(alpha=0.0, k=0, batch_users=512).fit(train).score)
        for name, cls, share in (("mf_bpr", MatrixFactorizationBPR, config.share_mf), ("lightgcn", LightGCN, config.share_lightgcn)):
            if not budget.can_afford(share):
                results[name] = {"skipped": "time budget"}
                continue
            evaluate(name, cls(epochs=1000, time_budget_s=budget.allot(share), seed=config.seed).fit(train).score)

    with budget.phase("graphrec_train"):
        dataset_train = dataset.with_interactions(full)
        graphrec = fit_graphrec(dataset_train, val, budget.allot(config.share_graphrec), config.seed, config.d_model)
        report["graphrec_training"] = {
            "steps": len(graphrec.result.history), "best_step": graphrec.result.best_step,
            "best_val_recall@20_trainer": round(graphrec.result.best_val_recall, 5),
            "stopped_because": graphrec.result.stopped_because, "seconds": round(graphrec.result.seconds, 1),
        }
        gnn_val = evaluate("model: graphrec_gnn_only", graphrec.validation.score)

    with budget.phase("filter_and_blend"):
        spectral = _spectral_filter(config, dataset.n_items).fit(train)
        filt_val = evaluate("model: spectral_filter_only", spectral.score)
        best_w, best = 0.0, -1.0
        sweep = {}
        z_f, z_g = row_standardize(filt_val), row_standardize(gnn_val)
        for w in BLEND_GRID:
            scores = (1 - w) * z_f + w * z_g
            m = ranking_metrics(top_k(lambda r: scores[r], np.arange(len(users)), train[users], k), val_u, k)
            sweep[str(w)] = m[f"recall@{k}"]
            if m[f"recall@{k}"] > best:
                best_w, best, best_m = w, m[f"recall@{k}"], m
        results["model: graphrec (gnn + spectral filter blend)"] = best_m
        report["blend"] = {"graphrec_weight": best_w, "validation_recall_by_weight": sweep}
        logger.info("blend: GraphRec weight %.2f -> validation recall@%d %.4f", best_w, k, best)
        del filt_val, gnn_val, z_f, z_g

    if dataset.friends is not None:
        with budget.phase("friends"):
            report["friends"] = _friends(dataset, graphrec.full.user, config, out)

    with budget.phase("final_ranking"):
        spectral = _spectral_filter(config, dataset.n_items).fit(full)
        popularity = Popularity().fit(full).item_scores
        has_history = np.diff(full.indptr) > 0

        def final_scores(rows: np.ndarray) -> np.ndarray:
            s = (1 - best_w) * row_standardize(spectral.score(rows)) + best_w * row_standardize(graphrec.full.score(rows))
            s[~has_history[rows]] = popularity  # cold users: the most popular places
            return s

        all_users = np.arange(dataset.n_users)
        top = top_k(final_scores, all_users, full, k, chunk=1024, label="final ranking")
        _write_top(out / f"places_top{k}.txt", dataset.user_ids, dataset.item_ids[top])
        report["cold_users"] = int((~has_history).sum())

    report["phases"] = budget.phases
    report["total_seconds"] = round(budget.elapsed(), 1)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    logger.info("benchmark %s done in %.0fs; files in %s", config.dataset, budget.elapsed(), out)
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
    with path.open("w") as f:
        for user, row in zip(ids, top_ids):
            f.write(f"{user} " + " ".join(map(str, row)) + "\n")
    logger.info("wrote %s (%d lines)", path, len(ids))
