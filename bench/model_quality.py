"""Benchmark: train GraphRec on the default world and compare it with the baselines and the oracle.

Targets (issue 3), all on the held-out test part: GraphRec Recall@20 >= 0.90 x oracle and
>= 1.2 x MF-BPR; friend compatibility ROC-AUC >= 0.95; cold users: MRR >= 1.2 x popularity;
training <= 5 min wall time and <= 8 GiB peak memory on 2 cores.
"""

from __future__ import annotations

import json
import logging
import time

import torch

from bench.common import peak_rss_mib
from recsys_core.evaluation.compare import WorldTruth, compare, summary_markdown
from recsys_core.graph import build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import describe, fit

TRAIN = TrainConfig(max_steps=400, time_budget_s=270.0, eval_every=25, batch_size=16384)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    world = generate_world(WorldConfig())
    bundle = build_from_world(world)
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    trained = fit(bundle, ModelConfig.for_vocabulary(bundle.vocabulary), TRAIN)
    train_s = time.perf_counter() - started
    train_peak = peak_rss_mib()
    two_tower = fit(bundle, ModelConfig.for_vocabulary(bundle.vocabulary, n_layers=0), TRAIN, split=trained.split).model
    comparison = compare(
        bundle,
        trained.split,
        {"graphrec": trained.model, "two_tower": two_tower},
        world=WorldTruth(world["users"], world["places"], world["interactions"]),
    )

    def test(model: str, metric: str = "recall@20", tier: str = "all") -> float:
        return comparison.place_metric("test", model, metric, tier)

    figures = {
        "train": describe(trained),
        "train_wall_s": round(train_s, 1),
        "peak_rss_mib_after_training": round(train_peak, 1),
        "peak_rss_mib_before_training": round(rss_before, 1),
        "test_recall@20": {m: round(test(m), 4) for m in comparison.places["model"].unique()},
        "test_cold_mrr": {m: round(test(m, "mrr", "cold"), 4) for m in comparison.places["model"].unique()},
        "test_friend_compat_auc": {
            m: round(comparison.friend_metric("test", m), 4) for m in comparison.friends["model"].unique()
        },
        "test_attend_auc_among_compatible": {
            m: round(comparison.friend_metric("test", m, "attend_auc_among_compatible"), 4)
            for m in comparison.friends["model"].unique()
        },
        "ratios": {
            "graphrec_over_oracle_recall@20": round(test("graphrec") / test("oracle"), 3),
            "graphrec_over_mf_bpr_recall@20": round(test("graphrec") / test("mf_bpr"), 3),
            "graphrec_over_popularity_cold_mrr": round(
                test("graphrec", "mrr", "cold") / test("popularity", "mrr", "cold"), 3
            ),
        },
        "targets": {
            "graphrec_over_oracle_recall@20": 0.9,
            "graphrec_over_mf_bpr_recall@20": 1.2,
            "friend_compat_auc": 0.95,
            "graphrec_over_popularity_cold_mrr": 1.2,
            "train_wall_s": 300,
            "peak_rss_mib": 8192,
        },
        "seconds": comparison.seconds,
        "table_markdown": summary_markdown(comparison, "test"),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
