"""Benchmark: what each training or model change does to GraphRec on world v2, one run.

Issue #17 asks, where GraphRec falls short, to report what each change did. Every variant trains
the same number of steps (a budget the shared machine's noise cannot bend; the seconds are
reported beside it) on the same world and time split as `bench.model_quality`, and is scored by the
same protocol (test part, full ranking within the home city): Recall@20 overall, on zero-history
users and at new places, beside the validation figure training selected on.

    python -m bench --only graphrec_variants      (or: python -m bench.graphrec_variants --only default,gat)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from typing import Any

import torch

from recsys_core.evaluation import protocol
from recsys_core.evaluation.served_ranking import local_matrix, score_city
from recsys_core.evaluation.split import SplitPolicy, training_graph
from recsys_core.graph import GraphBundle, build_from_world
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import fit

# name -> (ModelConfig overrides, TrainConfig overrides); "default" is the shipped setting.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "two_tower": ({"n_layers": 0}, {}),
    "no_supervision_masking": ({}, {"mask_supervision_edges": False}),
    "place_vectors": ({"id_embeddings": "place"}, {}),
    "place_vectors_slow": ({"id_embeddings": "place"}, {"lr_embeddings": 3e-3, "node_vector_weight_decay": 1.0}),
    "place_vectors_slower": ({"id_embeddings": "place"}, {"lr_embeddings": 1e-3, "node_vector_weight_decay": 1.0}),
    "place_bias": ({"place_offsets": 1}, {}),
    "place_offsets": ({"place_offsets": 8}, {}),
    "place_offsets_slow": ({"place_offsets": 8}, {"lr_embeddings": 3e-3, "node_vector_weight_decay": 1.0}),
    "all_vectors": ({"id_embeddings": "all"}, {}),
    "no_place_isolation": ({}, {"isolate_place_share": 0.0}),
    "time_decay": ({"time_decay": True}, {}),
    "one_layer": ({"n_layers": 1}, {}),
    "bpr": ({}, {"loss": "bpr"}),
    "engagement_weighted": ({}, {"engagement_weighted": True}),
    "mixed_negatives": ({}, {"hard_negative_share": 0.5}),
    "gat": ({"backbone": "gat"}, {}),
}
TIERS = ("all", "zero", protocol.NEW_PLACES)


def evaluate(bundle: GraphBundle, split: Any, model: GraphRec, part: str) -> dict[str, float]:
    """Recall@20 of `model` on `part`, overall, on zero-history users and at new places."""
    inputs = GraphInputs.from_hetero(training_graph(bundle, split), model.config.use_social, model.config.time_decay)
    truth = protocol.PlaceTruth.from_split(
        bundle, split, part, inputs.city["user"].numpy(), inputs.city["place"].numpy()
    )
    with torch.no_grad():
        z = model.embed(inputs)

    def score(city: int, users: Any, places: Any) -> Any:
        exclude = local_matrix(truth.seen_user, truth.seen_place, users, places)
        return score_city(model, z, inputs, city, users, places, exclude)

    table = protocol.evaluate_places({"model": score}, truth)
    return {tier: round(float(table.loc[table["tier"] == tier, "recall@20"].iloc[0]), 4) for tier in TIERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100, help="training steps per variant")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    config = WorldConfig()
    bundle = build_from_world(generate_world(config))
    split = SplitPolicy().apply(bundle)
    base = TrainConfig(max_steps=args.steps, time_budget_s=3600.0, eval_every=25, batch_size=16384)
    figures: dict[str, Any] = {}
    for name in names:
        model_overrides, train_overrides = VARIANTS[name]
        model_config = ModelConfig.for_world(bundle.vocabulary, **bundle.node_counts(), **model_overrides)
        started = time.perf_counter()
        trained = fit(bundle, model_config, dataclasses.replace(base, **train_overrides), split=split)
        seconds = time.perf_counter() - started
        figures[name] = {
            "model": model_overrides,
            "train": train_overrides,
            "steps": int(trained.history["step"].max()),
            "best_val_recall@20": round(trained.best_val_recall, 4),
            "test_recall@20": evaluate(bundle, split, trained.model, "test"),
            "seconds": round(seconds, 1),
        }
        logging.info("%s: %s", name, json.dumps(figures[name]))
    print(json.dumps({"steps_per_variant": args.steps, "variants": figures}))  # `python -m bench` writes it


if __name__ == "__main__":
    main()
