"""AdamW with a learning rate per kind of parameter, linear warm-up and decay on plateau.

A fixed decay schedule starves short CPU runs long before they converge, so the rate is
constant after warm-up and halves (by default) whenever validation stops improving.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_core.model.graphrec import GraphRec
from recsys_core.training.config import TrainConfig


def build_optimizer(model: GraphRec, config: TrainConfig) -> torch.optim.Optimizer:
    """Dense layers, id embeddings and the linear taste path each get their own learning rate."""
    embeddings = list(model.encoders.parameters()) if model.config.featureless else []
    node_vectors = list(model.node_vectors.parameters()) if model.node_vectors is not None else []
    if model.place_offsets is not None:
        node_vectors += list(model.place_offsets.parameters())
    wide = [p for name, p in model.named_parameters() if "wide." in name]  # the linear feature paths
    special = {id(p) for p in embeddings + node_vectors + wide}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if id(p) not in special], "lr": config.lr}
    ]
    if embeddings:
        groups.append({"params": embeddings, "lr": config.lr_embeddings, "weight_decay": 0.0})
    if node_vectors:
        groups.append(
            {"params": node_vectors, "lr": config.lr_embeddings, "weight_decay": config.node_vector_weight_decay}
        )
    if wide:
        groups.append({"params": wide, "lr": config.lr_wide, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def peak_rates(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each parameter group's configured rate, the one warm-up climbs to."""
    return [float(group["lr"]) for group in optimizer.param_groups]


def warm_up(optimizer: torch.optim.Optimizer, peak: list[float], step: int, config: TrainConfig) -> None:
    """Linear warm-up over the first `config.warmup_steps` steps (a no-op after them)."""
    if step <= config.warmup_steps:
        for group, rate in zip(optimizer.param_groups, peak, strict=True):
            group["lr"] = rate * step / config.warmup_steps


def decay_on_plateau(optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
    for group in optimizer.param_groups:
        group["lr"] *= config.lr_decay_on_plateau
