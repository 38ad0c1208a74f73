"""Checkpoints without pickle: a dict of tensors (weights_only loading) plus JSON beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec

WEIGHTS = "model.pt"
CONFIG = "model.json"


def save_checkpoint(model: GraphRec, directory: Path, extra: dict[str, object] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WEIGHTS
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)  # a killed save never leaves a half-written checkpoint behind
    meta = {
        "model_config": json.loads(model.config.to_json()),
        "edge_dims": [["__".join(k), v] for k, v in model.edge_dims.items()],
        **(extra or {}),
    }
    (directory / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load_checkpoint(directory: Path) -> tuple[GraphRec, dict[str, Any]]:
    directory = Path(directory)
    meta: dict[str, Any] = json.loads((directory / CONFIG).read_text())
    config = ModelConfig.from_json(json.dumps(meta["model_config"]))
    edge_dims = {tuple(k.split("__")): int(v) for k, v in meta["edge_dims"]}
    model = GraphRec(config, edge_dims)
    model.load_state_dict(torch.load(directory / WEIGHTS, weights_only=True))
    model.eval()
    return model, meta
