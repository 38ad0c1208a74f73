"""Train GraphRec on a graph, and the artifact that carries the result between stages.

`TrainedModel` is what the `trained_model` asset stores: weights and configs (JSON), the
vocabulary the model was trained on (vocabulary.json, what its ids mean), the training curve,
the split indices, so evaluation and serving use exactly the held-out parts that training
never saw, and the place model built around GraphRec (`ranking`): the blend as fit on the
training pairs (what evaluation measures) and as refit on every pair (what the service scores with).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys_core.evaluation.split import Split, SplitPolicy, split_indices, training_graph
from recsys_core.graph import INTERACTS, SOCIAL, GraphBundle
from recsys_core.model.checkpoint import load_checkpoint, load_vocabulary, save_checkpoint
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.ranking.blend import PlaceBlend
from recsys_core.ranking.fit import PlaceModelFit, PlaceModelSettings, fit_place_model, interaction_matrices
from recsys_core.ranking.people import PeopleFit, PeopleModel, fit_people_model
from recsys_core.training.config import TrainConfig, for_id_embeddings
from recsys_core.training.loop import Progress, train
from recsys_core.training.state import TrainResult
from recsys_core.training.warm_start import WarmStart
from recsys_core.vocabulary import Vocabulary

SPLIT_FILE = "split.pt"
HISTORY_FILE = "history.parquet"
PLACE_MODEL_DIR = "place_model"  # served/ and selected/ blends, and report.json
SERVED_PLACE_MODEL = f"{PLACE_MODEL_DIR}/served"
PEOPLE_MODEL_DIR = "people_model"  # served/ and report.json
SERVED_PEOPLE_MODEL = f"{PEOPLE_MODEL_DIR}/served"


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
    warm_start: str = ""  # "from <source>": continued from those weights; else why not ("": a cold start asked)
    place_model: PlaceModelFit | None = None  # None: GraphRec alone (the two-tower baseline, old artifacts)
    people_model: PeopleFit | None = None  # None: no social graph (or GraphRec alone)

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
                "warm_start": self.warm_start,
            },
            vocabulary=self.vocabulary,  # vocabulary.json beside the weights, where serving reads it
        )
        torch.save(
            {f.name: torch.from_numpy(getattr(self.split, f.name)) for f in dataclasses.fields(Split)},
            directory / SPLIT_FILE,
        )
        self.history.to_parquet(directory / HISTORY_FILE, index=False)
        if self.place_model is not None:
            self.place_model.served.save(directory / SERVED_PLACE_MODEL)
            self.place_model.selected.save(directory / PLACE_MODEL_DIR / "selected")
            (directory / PLACE_MODEL_DIR / "report.json").write_text(
                json.dumps(self.place_model.report, indent=2, default=float)
            )
        if self.people_model is not None:
            self.people_model.served.save(directory / SERVED_PEOPLE_MODEL)
            (directory / PEOPLE_MODEL_DIR / "report.json").write_text(
                json.dumps(self.people_model.report, indent=2, default=float)
            )
        return path

    @classmethod
    def load(cls, directory: Path) -> TrainedModel:
        directory = Path(directory)
        model, meta = load_checkpoint(directory)
        vocabulary = load_vocabulary(directory)  # the built-in one for models saved before vocabulary.json
        model.check_fits(vocabulary)
        arrays = torch.load(directory / SPLIT_FILE, weights_only=True)
        place_dir = directory / PLACE_MODEL_DIR
        place_model = (
            PlaceModelFit(
                served=PlaceBlend.load(directory / SERVED_PLACE_MODEL),
                selected=PlaceBlend.load(place_dir / "selected"),
                report=json.loads((place_dir / "report.json").read_text()),
            )
            if place_dir.is_dir()
            else None
        )
        people_dir = directory / PEOPLE_MODEL_DIR
        people_model = (
            PeopleFit(
                PeopleModel.load(directory / SERVED_PEOPLE_MODEL),
                json.loads((people_dir / "report.json").read_text()),
            )
            if people_dir.is_dir()
            else None
        )
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
            warm_start=str(meta.get("warm_start", "")),
            place_model=place_model,
            people_model=people_model,
        )

    def weights_are_finite(self) -> bool:
        graphrec = all(torch.isfinite(p).all() for p in self.model.state_dict().values() if p.is_floating_point())
        blends = [] if self.place_model is None else [self.place_model.served, self.place_model.selected]
        return graphrec and not any(b.non_finite_parts() for b in blends)


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
    split_policy: SplitPolicy | None = None,
    warm_start: WarmStart | None = None,
) -> TrainedModel:
    """Split (unless given: by `split_policy`, else at random per user with `split_seed`), train
    with early stopping (from `warm_start`'s weights when given), keep the best-by-validation weights.

    `model_config` must be of the bundle's vocabulary (`ModelConfig.for_vocabulary(bundle.vocabulary, ...)`).
    """
    if split is None:
        split = split_policy.apply(bundle) if split_policy is not None else split_indices(bundle, seed=split_seed)
    result: TrainResult = train(bundle, split, model_config, train_config, progress, warm_start)
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
        warm_start=result.warm_start,
    )


def fit_served_model(
    bundle: GraphBundle,
    model_config: ModelConfig,
    train_config: TrainConfig,
    place_settings: PlaceModelSettings,
    split_seed: int = 0,
    progress: Progress | None = None,
    split_policy: SplitPolicy | None = None,
    warm_start: WarmStart | None = None,
) -> TrainedModel:
    """GraphRec (`fit`, from `warm_start` when given), then the place model around it
    (`ranking.fit.fit_place_model`) on the same split."""
    trained = fit(
        bundle,
        model_config,
        train_config,
        split_seed=split_seed,
        progress=progress,
        split_policy=split_policy,
        warm_start=warm_start,
    )
    trained.place_model = fit_place_model(bundle, trained.split, trained.model, place_settings)
    trained.people_model = people_model_of(bundle, trained.split, place_settings.seed)
    return trained


def people_model_of(bundle: GraphBundle, split: Split, seed: int) -> PeopleFit | None:
    """The people model of a graph with social edges (`ranking.people`), measured on the split's
    held-out compatible label pairs; None without social edges."""
    if SOCIAL not in bundle.data.edge_types or bundle.data[SOCIAL].edge_index.shape[1] == 0:
        return None
    n_edges = bundle.data[INTERACTS].edge_index.shape[1]
    _, all_counts = interaction_matrices(bundle, np.arange(n_edges))
    _, train_counts = interaction_matrices(bundle, split.train_edges)
    compatible = bundle.friend_compat.numpy() > 0
    pairs = bundle.friend_pairs.numpy()
    held = {
        part: pairs[:, labels[compatible[labels]]]
        for part, labels in (("validation", split.val_labels), ("test", split.test_labels))
    }
    return fit_people_model(
        bundle.data[SOCIAL].edge_index.numpy(),
        training_graph(bundle, split)[SOCIAL].edge_index.numpy(),
        int(bundle.data["user"].num_nodes),
        all_counts,
        train_counts,
        held,
        seed,
    )


def describe(trained: TrainedModel) -> dict[str, object]:
    return {
        "best_step": trained.best_step,
        "best_val_recall@20": round(trained.best_val_recall, 4),
        "stopped_because": trained.stopped_because,
        "train_seconds": round(trained.seconds, 1),
        "resumed_from_step": trained.resumed_from_step,
        "warm_start": trained.warm_start,
        "parameters": int(sum(p.numel() for p in trained.model.parameters())),
        "model_config": json.loads(trained.model.config.to_json()),
        "held_out": {"val_pairs": int(len(trained.split.val_edges)), "test_pairs": int(len(trained.split.test_edges))},
        "steps": int(np.asarray(trained.history["step"]).max()) if len(trained.history) else 0,
        "place_model": trained.place_model.report if trained.place_model is not None else None,
        "people_model": trained.people_model.report if trained.people_model is not None else None,
    }
