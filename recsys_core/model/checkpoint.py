"""Checkpoints without pickle: a dict of tensors (weights_only loading) plus JSON beside it.

Beside them, the vocabulary the model was trained on (vocabulary.json): what its ids mean, and
what serving names them with. `ModelConfig.from_json` reads configs saved before the vocabulary
sizes were fields as the built-in vocabulary's (the fields' defaults), and `load_vocabulary`
reads a directory without vocabulary.json as the built-in vocabulary: older checkpoints load as
what they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.vocabulary import BUILTIN, VOCABULARY_FILE, Vocabulary

WEIGHTS = "model.pt"
CONFIG = "model.json"


def save_checkpoint(
    model: GraphRec, directory: Path, extra: dict[str, object] | None = None, vocabulary: Vocabulary | None = None
) -> Path:
    """Weights and model.json in `directory`; with `vocabulary` (the model's), vocabulary.json too."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if vocabulary is not None:
        model.check_fits(vocabulary)
        vocabulary.save(directory)
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


def load_vocabulary(directory: Path) -> Vocabulary:
    """The vocabulary saved beside a checkpoint; the built-in one for checkpoints from before vocabularies were data."""
    directory = Path(directory)
    return Vocabulary.load(directory) if (directory / VOCABULARY_FILE).exists() else BUILTIN


def load_checkpoint(directory: Path) -> tuple[GraphRec, dict[str, Any]]:
    directory = Path(directory)
    meta: dict[str, Any] = json.loads((directory / CONFIG).read_text())
    config = ModelConfig.from_json(json.dumps(meta["model_config"]))
    edge_dims = {tuple(k.split("__")): int(v) for k, v in meta["edge_dims"]}
    model = GraphRec(config, edge_dims)
    model.load_state_dict(torch.load(directory / WEIGHTS, weights_only=True))
    model.eval()
    return model, meta
