"""Validation Recall@k in the served order: what early stopping and model selection follow."""

from __future__ import annotations

import numpy as np
import torch

from recsys_core.evaluation import metrics
from recsys_core.evaluation.served_ranking import city_blocks, local_matrix, score_city
from recsys_core.evaluation.split import Split
from recsys_core.graph import INTERACTS, GraphBundle
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import TrainConfig


def validation_users(bundle: GraphBundle, split: Split, config: TrainConfig) -> np.ndarray:
    """The users with validation pairs, at most `config.eval_users` of them (a seeded sample)."""
    val_users = np.unique(bundle.data[INTERACTS].edge_index[0, torch.from_numpy(split.val_edges)].numpy())
    rng = np.random.default_rng(config.seed)
    if len(val_users) > config.eval_users:
        val_users = np.sort(rng.choice(val_users, config.eval_users, replace=False))
    return val_users


def validation_recall(
    model: GraphRec,
    inputs: GraphInputs,
    bundle: GraphBundle,
    split: Split,
    users: np.ndarray,
    k: int = 20,
    rerank_depth: int = 200,
) -> float:
    """Mean Recall@k over `users` on validation pairs, training pairs excluded, served order."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = model.embed(inputs)
        ei = bundle.data[INTERACTS].edge_index.numpy()
        recalls = []
        for city, u, p in city_blocks(inputs, users):
            exclude = local_matrix(ei[0, split.train_edges], ei[1, split.train_edges], u, p)
            truth = local_matrix(ei[0, split.val_edges], ei[1, split.val_edges], u, p)
            scores = score_city(model, z, inputs, city, u, p, exclude, rerank_depth)
            topk = metrics.top_k_excluding(scores, exclude, min(k, len(p)))
            recalls.append(metrics.recall_at_k(topk, truth))
    model.train(was_training)
    values = np.concatenate(recalls) if recalls else np.array([np.nan])
    return metrics.mean_ignoring_nan(values)
