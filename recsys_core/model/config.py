"""Hyperparameters of the GraphRec model; saved beside every checkpoint as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 128
    n_layers: int = 2
    backbone: Literal["sage", "gat"] = "sage"
    gat_heads: int = 4
    dropout: float = 0.1
    head_hidden: tuple[int, ...] = (256, 128)
    head_dropout: float = 0.1
    d_ctx: int = 16
    # Featureless mode (interaction-only data such as Gowalla / LastFM): learned id embeddings.
    featureless: bool = False
    n_users: int = 0
    n_places: int = 0
    n_cities: int = 8
    n_neighborhoods: int = 15
    use_social: bool = True
    # Extra edge-weight input: exp(-days since the pair's last event / 30).
    time_decay: bool = False
    # Linear taste path added to the output embeddings (see encoders.WideTaste).
    wide: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.backbone not in ("sage", "gat"):
            problems.append(f"backbone must be 'sage' or 'gat', got {self.backbone!r}")
        if self.backbone == "gat" and self.d_model % self.gat_heads:
            problems.append(f"d_model ({self.d_model}) must be divisible by gat_heads ({self.gat_heads})")
        if self.featureless and (self.n_users < 1 or self.n_places < 1):
            problems.append("featureless mode needs n_users and n_places")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        raw = json.loads(text)
        raw["head_hidden"] = tuple(raw["head_hidden"])
        return cls(**raw)
