"""Train GraphRec on a graph, and the artifact that carries the result between stages.

`TrainedModel` is what the `trained_model` asset stores: weights and configs (JSON), the
vocabulary the model was trained on (vocabulary.json, what its ids mean), the training curve,
and the split indices, so evaluation and serving use exactly the held-out parts that training
never saw.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys_core.evaluation.split import Split, split_indices
from recsys_core.graph import INTERACTS, GraphBundle
from recsys_core.model.checkpoint import load_checkpoint, load_vocabulary, save_checkpoint
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.training.config import TrainConfig, for_id_embeddings
from recsys_core.training.loop import Progress, train
from recsys_core.training.state import TrainResult
from recsys_core.vocabulary import Vocabulary

SPLIT_FILE = "split.pt"
HISTORY_FILE = "history.parquet"


@dataclass
class TrainedModel:
    model: GraphRec
    vocabulary: Vocabulary  # the graph's: the model's widths follow it, serving names ids with it
    split: Split
    train_config: TrainConfig
    history: pd.DataFrame
    best_step: int
    best_val_recall: float
    stopped_because: str
    seconds: float
    resumed_from_step: int = 0  # the checkpoint step training continued from (0: from scratch)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        path = save_checkpoint(
            self.model,
            directory,
            extra={
                "train_config": dataclasses.asdict(self.train_config),
                "best_step": self.best_step,
                "best_val_recall": self.best_val_recall,
                "stopped_because": self.stopped_because,
                "seconds": self.seconds,
                "resumed_from_step": self.resumed_from_step,
            },
            vocabulary=self.vocabulary,  # vocabulary.json beside the weights, where serving reads it
        )
        torch.save(
            {f.name: torch.from_numpy(getattr(self.split, f.name)) for f in dataclasses.fields(Split)},
            directory / SPLIT_FILE,
        )
        self.history.to_parquet(directory / HISTORY_FILE, index=False)
        return path

    @classmethod
    def load(cls, directory: Path) -> TrainedModel:
        directory = Path(directory)
        model, meta = load_checkpoint(directory)
        vocabulary = load_vocabulary(directory)  # the built-in one for models saved before vocabulary.json
        model.check_fits(vocabulary)
        arrays = torch.load(directory / SPLIT_FILE, weights_only=True)
        return cls(
            model=model,
            vocabulary=vocabulary,
            split=Split(**{k: v.numpy() for k, v in arrays.items()}),
            train_config=TrainConfig(**meta["train_config"]),
            history=pd.read_parquet(directory / HISTORY_FILE),
            best_step=int(meta["best_step"]),
            best_val_recall=float(meta["best_val_recall"]),
            stopped_because=str(meta["stopped_because"]),
            seconds=float(meta["seconds"]),
            resumed_from_step=int(meta.get("resumed_from_step", 0)),
        )

    def weights_are_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.model.state_dict().values() if p.is_floating_point())


def train_config_for(model_config: ModelConfig, train_config: TrainConfig, bundle: GraphBundle) -> TrainConfig:
    """The trainer's settings for this model of this graph: a featureless model's are those tuned for
    id embeddings (`for_id_embeddings`, sized by the graph's pairs), any other model's as given."""
    if not model_config.featureless:
        return train_config
    return for_id_embeddings(train_config, int(bundle.data[INTERACTS].edge_index.shape[1]))


def fit(
    bundle: GraphBundle,
    model_config: ModelConfig,
    train_config: TrainConfig,
    split: Split | None = None,
    split_seed: int = 0,
    progress: Progress | None = None,
) -> TrainedModel:
    """Split (unless given), train with early stopping, keep the best-by-validation weights.

    `model_config` must be of the bundle's vocabulary (`ModelConfig.for_vocabulary(bundle.vocabulary, ...)`).
    """
    split = split or split_indices(bundle, seed=split_seed)
    result: TrainResult = train(bundle, split, model_config, train_config, progress)
    return TrainedModel(
        model=result.model,
        vocabulary=bundle.vocabulary,
        split=split,
        train_config=train_config,
        history=pd.DataFrame(result.history),
        best_step=result.best_step,
        best_val_recall=result.best_val_recall,
        stopped_because=result.stopped_because,
        seconds=result.seconds,
        resumed_from_step=result.resumed_from_step,
    )


def describe(trained: TrainedModel) -> dict[str, object]:
    return {
        "best_step": trained.best_step,
        "best_val_recall@20": round(trained.best_val_recall, 4),
        "stopped_because": trained.stopped_because,
        "train_seconds": round(trained.seconds, 1),
        "resumed_from_step": trained.resumed_from_step,
        "parameters": int(sum(p.numel() for p in trained.model.parameters())),
        "model_config": json.loads(trained.model.config.to_json()),
        "held_out": {"val_pairs": int(len(trained.split.val_edges)), "test_pairs": int(len(trained.split.test_edges))},
        "steps": int(np.asarray(trained.history["step"]).max()) if len(trained.history) else 0,
    }
