"""Start training from a saved model's weights instead of from scratch.

A retrain after new data changes a few hundred pairs of a graph the served model already knows:
continuing from the served weights for a few steps gets where a cold start gets in a few hundred.
Only a model of the very same configuration qualifies (widths, vocabulary sizes, id-embedding
rows, edge widths); anything else trains from scratch, and the run says why. The warm weights are
the first candidate of best-by-validation selection (`training.loop`), so a warm run's model is
never worse on validation than the one it started from.

A warm start is honest only if the weights never trained on what the new run holds out. The time
split guarantees it for pairs: appended data only moves the windows later, so a pair that was in
training stays there; friend labels keep their part by a hash of the pair (`evaluation.split`). A
random per-user split reshuffles the pairs whenever data arrives, so it always starts cold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from recsys_core.evaluation.split import SplitPolicy
from recsys_core.graph import GraphBundle
from recsys_core.model.checkpoint import CONFIG, load_checkpoint
from recsys_core.model.config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmStart:
    """Weights to start from and where they came from (a served version, a directory)."""

    weights: dict[str, torch.Tensor]
    source: str
    edge_dims: dict[tuple[str, str, str], int]


def warm_start_from(directory: str | Path, model_config: ModelConfig, source: str = "") -> tuple[WarmStart | None, str]:
    """The saved model in `directory` as a warm start for `model_config`, or None and the reason it cannot be."""
    directory = Path(directory)
    label = source or str(directory)
    if not (directory / CONFIG).exists():
        return None, f"{label} has no saved model"
    try:
        model, _ = load_checkpoint(directory)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        return None, f"{label} cannot be loaded: {exc}"
    if model.config != model_config:
        differing = [
            f.name for f in fields(model_config) if getattr(model.config, f.name) != getattr(model_config, f.name)
        ]
        return None, f"{label} is of another model configuration ({', '.join(differing[:5])} differ)"
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return WarmStart(weights, label, dict(model.edge_dims)), f"from {label}"


def refresh_start(
    directory: str | Path, model_config: ModelConfig, bundle: GraphBundle, policy: SplitPolicy, source: str = ""
) -> tuple[WarmStart | None, str]:
    """`warm_start_from`, when `policy` splits `bundle` by time (see the module); else None and why."""
    if policy.resolved_mode(bundle) != "time":
        return None, "the held-out pairs are drawn at random and may include pairs the saved model trained on"
    return warm_start_from(directory, model_config, source)
