"""What a training run carries from step to step, and its checkpoint: save, match, resume.

With `checkpoint_dir` set, the whole state (model, optimizer, step, best weights so far, RNG
states, history) is saved there atomically, as a dict of tensors and plain values loaded with
`weights_only=True` (nothing is unpickled). A resumed run continues step for step as the run
that was never interrupted; a checkpoint of another graph, split or configuration does not
match the run's fingerprint and is ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.evaluation.split import Split
from recsys_core.files import write_atomically
from recsys_core.graph import INTERACTS, GraphBundle
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import RUN_ONLY, TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "train_state.pt"
TrainingState = dict[str, Any]


@dataclass
class TrainResult:
    model: GraphRec
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_val_recall: float = float("nan")
    stopped_because: str = ""
    seconds: float = 0.0
    resumed_from_step: int = 0  # 0: trained from scratch
    warm_start: str = ""  # "from <source>" when it continued from saved weights, else why not ("": not asked)


@dataclass
class Selection:
    """Best-model selection and early stopping, updated at every evaluation."""

    best_state: dict[str, torch.Tensor] | None = None
    bad_evals: int = 0
    early_stop: str = ""


def fingerprint(
    bundle: GraphBundle,
    split: Split,
    inputs: GraphInputs,
    model_config: ModelConfig,
    config: TrainConfig,
    warm_start: str = "",
) -> str:
    """What a checkpoint must match to be resumed: graph, split, model and training settings, and
    the weights it started from (`warm_start`: their source, "" for a cold start)."""
    digest = hashlib.sha256(model_config.to_json().encode())
    digest.update(warm_start.encode())
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_ONLY}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    # What training reads of the vocabulary beyond its sizes (in the model config) and the features.
    digest.update(json.dumps(bundle.vocabulary.slot_of_bucket).encode())
    arrays = [
        bundle.data[INTERACTS].edge_index,
        *(inputs.x[t] for t in sorted(inputs.x)),
        *(torch.from_numpy(np.ascontiguousarray(getattr(split, f.name))) for f in dataclasses.fields(Split)),
    ]
    for array in arrays:
        digest.update(str(tuple(array.shape)).encode())
        digest.update(array.contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_training_state(state: TrainingState, directory: str | Path) -> Path:
    """torch.save, then written beside the checkpoint, fsynced and renamed: never half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return write_atomically(Path(directory) / CHECKPOINT_FILE, buffer.getvalue(), prefix=f".{CHECKPOINT_FILE}-")


def load_training_state(directory: str | Path) -> TrainingState | None:
    """The saved training state, or None when there is none (weights_only: no arbitrary objects)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    state: TrainingState = torch.load(path, weights_only=True)
    return state


def resumable_state(directory: str, key: str) -> TrainingState | None:
    """The checkpoint in `directory` if it is readable and of this very run, else None (and why, logged)."""
    try:
        saved = load_training_state(directory)
    except Exception as exc:  # an unreadable checkpoint must not block training
        logger.warning("checkpoint in %s cannot be read (%s): training from scratch", directory, exc)
        return None
    if saved is None:
        logger.info("no checkpoint in %s yet: training from scratch", directory)
    elif saved.get("fingerprint") != key:
        logger.warning("checkpoint in %s is of another graph, split or configuration: training from scratch", directory)
        saved = None
    return saved


def capture_state(
    key: str,
    step: int,
    model: GraphRec,
    optimizer: torch.optim.Optimizer,
    selection: Selection,
    result: TrainResult,
    seconds: float,
    sampler_rng: torch.Generator,
) -> TrainingState:
    """Everything a resumed run needs to continue as if never interrupted."""
    return {
        "fingerprint": key,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best": selection.best_state or {},
        "best_step": result.best_step,
        "best_val_recall": result.best_val_recall,
        "bad_evals": selection.bad_evals,
        "early_stop": selection.early_stop,
        "history": result.history,
        "seconds": seconds,
        "torch_rng": torch.get_rng_state(),
        "sampler_rng": sampler_rng.get_state(),
    }


def restore_state(
    saved: TrainingState,
    model: GraphRec,
    optimizer: torch.optim.Optimizer,
    selection: Selection,
    result: TrainResult,
    sampler_rng: torch.Generator,
) -> tuple[int, float]:
    """Load a captured state into a fresh run; returns (the step to continue from, seconds already spent)."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    selection.best_state = saved["best"] or None
    selection.bad_evals, selection.early_stop = saved["bad_evals"], saved["early_stop"]
    result.best_step, result.best_val_recall = saved["best_step"], saved["best_val_recall"]
    result.history = list(saved["history"])
    result.resumed_from_step = saved["step"]
    torch.set_rng_state(saved["torch_rng"])
    sampler_rng.set_state(saved["sampler_rng"])
    return int(saved["step"]) + 1, float(saved["seconds"])
