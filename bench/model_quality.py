"""Benchmark: GraphRec on the default world (v2) against every baseline and the oracle, one run.

Issue #17's measurement, on the test part of the time split (the last two weeks), every trained
model given the same seconds: GraphRec Recall@20 over the best non-GNN model (two-tower, graph
filter, iALS, MF-BPR) and over the oracle; on zero-history users (served inductively from profile
and social edges) over popularity; the served people ranking's Recall@20 of held-out friendships
over the best of common neighbours, Adamic-Adar and personalized PageRank. The place model (the
served blend) is reported beside them. `--world v1` measures the feature-driven world instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time

import torch

from bench.common import peak_rss_mib
from recsys_core.evaluation.compare import (
    PEOPLE_HEURISTICS,
    PEOPLE_MODEL,
    PLACE_MODEL,
    WorldTruth,
    compare,
    summary_markdown,
)
from recsys_core.evaluation.split import SplitPolicy
from recsys_core.graph import build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.ranking.fit import PlaceModelSettings, fit_place_model
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import describe, fit, people_model_of

BUDGET_S = 180.0  # every trained model's seconds: GraphRec, the two-tower, MF-BPR, LightGCN
TRAIN = TrainConfig(max_steps=2000, time_budget_s=BUDGET_S, eval_every=25, batch_size=16384)
NON_GNN = ("two_tower", "item_item_filter", "ials", "mf_bpr")
TARGETS = {
    "graphrec_over_best_non_gnn_recall@20": 1.1,
    "graphrec_over_oracle_recall@20": 0.8,
    "graphrec_over_popularity_zero_history_recall@20": 3.0,
    "people_over_best_heuristic_recall@20": 1.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", choices=["v2", "v1"], default="v2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    config = WorldConfig.of_version(args.world)
    world = generate_world(config)
    bundle = build_from_world(world)
    policy = SplitPolicy()
    split = policy.apply(bundle)
    timed = policy.resolved_mode(bundle) == "time"
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    counts = bundle.node_counts()
    trained = fit(bundle, ModelConfig.for_world(bundle.vocabulary, **counts), TRAIN, split=split)
    train_s = time.perf_counter() - started
    train_peak = peak_rss_mib()
    two_tower = fit(bundle, ModelConfig.for_world(bundle.vocabulary, **counts, n_layers=0), TRAIN, split=split).model
    place_model = fit_place_model(bundle, split, trained.model, PlaceModelSettings())
    people = people_model_of(bundle, split, seed=0)
    comparison = compare(
        bundle,
        split,
        {"graphrec": trained.model, "two_tower": two_tower},
        world=WorldTruth(
            world["users"],
            world["places"],
            world["interactions"],
            config=config,
            day=config.weeks * 7 - policy.held_out_days / 2 if timed else None,
        ),
        baseline_budget_s=BUDGET_S,
        place_models={PLACE_MODEL: place_model.selected},
        people_report=people.report if people is not None and config.edges_are_friendships else None,
    )

    def test(model: str, metric: str = "recall@20", tier: str = "all") -> float:
        return comparison.place_metric("test", model, metric, tier)

    models = comparison.places["model"].unique()
    best_non_gnn = max(NON_GNN, key=test)
    ratios = {
        "graphrec_over_best_non_gnn_recall@20": round(test("graphrec") / test(best_non_gnn), 3),
        "graphrec_over_oracle_recall@20": round(test("graphrec") / test("oracle"), 3),
        "graphrec_over_popularity_zero_history_recall@20": round(
            test("graphrec", tier="zero") / test("popularity", tier="zero"), 3
        ),
    }
    if len(comparison.people):
        heuristic = max(PEOPLE_HEURISTICS, key=lambda m: comparison.people_metric("test", m))
        ratios["people_over_best_heuristic_recall@20"] = round(
            comparison.people_metric("test", PEOPLE_MODEL) / comparison.people_metric("test", heuristic), 3
        )
    figures = {
        "world": args.world,
        "world_config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        "split": policy.resolved_mode(bundle),
        "budget_s_per_trained_model": BUDGET_S,
        "train": describe(trained),
        "train_wall_s": round(train_s, 1),
        "peak_rss_mib_after_training": round(train_peak, 1),
        "peak_rss_mib_before_training": round(rss_before, 1),
        "test_recall@20": {m: round(test(m), 4) for m in models},
        "test_recall@20_by_tier": {
            tier: {m: round(test(m, tier=tier), 4) for m in models}
            for tier in ("zero", "cold", "warm", "hot", "new_places")
        },
        "test_people_recall@20": {
            m: round(comparison.people_metric("test", m), 4) for m in comparison.people["model"].unique()
        },
        "test_friend_compat_auc": {
            m: round(comparison.friend_metric("test", m), 4) for m in comparison.friends["model"].unique()
        },
        "best_non_gnn": best_non_gnn,
        "ratios": ratios,
        "targets": TARGETS,
        "seconds": comparison.seconds,
        "table_markdown": summary_markdown(comparison, "test"),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
