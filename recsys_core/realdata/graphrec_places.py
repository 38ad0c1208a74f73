"""GraphRec (featureless: learned id embeddings) trained on a public dataset with the project trainer.

The dataset's training file becomes one featureless ``GraphBundle``; the carved validation
pairs become the split's validation edges, so early stopping and best-checkpoint selection
use exactly the pairs every other tuning decision uses. For the final ranking the trained
weights embed the *full* training graph (validation pairs included in message passing).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray
from torch_geometric.data import HeteroData

from recsys_core.datasets.base import InteractionDataset
from recsys_core.evaluation.split import Split, training_graph
from recsys_core.graph import INTERACTS
from recsys_core.model.config import ModelConfig
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import TrainConfig, for_id_embeddings
from recsys_core.training.loop import train
from recsys_core.training.state import TrainResult
from recsys_core.vocabulary import Vocabulary

logger = logging.getLogger(__name__)


@dataclass
class Embeddings:
    user: np.ndarray
    place: np.ndarray

    def score(self, rows: np.ndarray) -> np.ndarray:
        """<z_u, z_p> for every place: the retrieval stage of GraphRec."""
        scores: NDArray[np.float32] = self.user[rows] @ self.place.T
        return scores


@dataclass
class GraphRecPlaces:
    """A trained featureless GraphRec: embeddings of the validation-time graph and of the full graph."""

    validation: Embeddings  # message passing over training pairs only: what validation may see
    full: Embeddings  # message passing over every training-file pair: what the final ranking uses
    result: TrainResult


def _split(bundle_edges: np.ndarray, n_items: int, val: sp.csr_matrix) -> Split:
    keys = bundle_edges[0] * n_items + bundle_edges[1]
    coo = val.tocoo()
    is_val = np.isin(keys, coo.row.astype(np.int64) * n_items + coo.col)
    empty = np.zeros(0, dtype=np.int64)
    return Split(np.flatnonzero(~is_val), np.flatnonzero(is_val), empty, empty, empty, empty)


def model_config(dataset: InteractionDataset, vocabulary: Vocabulary, d_model: int = 64) -> ModelConfig:
    """The featureless model of `dataset`, sized to `vocabulary` (its graph bundle's)."""
    return ModelConfig.for_vocabulary(
        vocabulary,
        d_model=d_model,
        n_layers=2,
        dropout=0.0,
        head_hidden=(d_model, d_model // 2),
        d_ctx=8,
        featureless=True,
        n_users=dataset.n_users,
        n_places=dataset.n_items,
        use_social=dataset.friends is not None,
        wide=False,
    )


def fit_graphrec(
    dataset: InteractionDataset, val: sp.csr_matrix, time_budget_s: float, seed: int, d_model: int = 64
) -> GraphRecPlaces:
    """Train on ``dataset`` minus ``val`` (early-stopped on ``val``), then embed the full graph."""
    bundle = dataset.to_graph_bundle()
    edges = bundle.data[INTERACTS].edge_index.numpy()
    split = _split(edges, dataset.n_items, val)
    n_pos = len(split.train_edges)
    config = dataclasses.replace(
        for_id_embeddings(TrainConfig(max_steps=100_000, time_budget_s=time_budget_s, seed=seed), n_pos),
        lambda_friend=0.0,  # friends have a model of their own here (realdata.friends)
        lambda_attend=0.0,
    )
    mc = model_config(dataset, bundle.vocabulary, d_model)
    result = train(bundle, split, mc, config)
    logger.info(
        "GraphRec: best validation recall@20 %.4f at step %d (%s)",
        result.best_val_recall,
        result.best_step,
        result.stopped_because,
    )
    return GraphRecPlaces(
        validation=_embed(result, training_graph(bundle, split), mc),
        full=_embed(result, bundle.data, mc),
        result=result,
    )


@torch.no_grad()
def _embed(result: TrainResult, data: HeteroData, mc: ModelConfig) -> Embeddings:
    z = result.model.embed(GraphInputs.from_hetero(data, mc.use_social, mc.time_decay))
    return Embeddings(z["user"].numpy().astype(np.float32), z["place"].numpy().astype(np.float32))
