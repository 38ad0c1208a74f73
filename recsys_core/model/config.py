"""Hyperparameters of the GraphRec model; saved beside every checkpoint as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from recsys_core.features import FeatureLayouts
from recsys_core.vocabulary import BUILTIN, Vocabulary


def vocabulary_sizes(vocabulary: Vocabulary) -> dict[str, int]:
    """The config fields that follow the vocabulary, with the vocabulary's values."""
    return {
        "n_cities": vocabulary.n_cities,
        "n_neighborhoods": vocabulary.n_neighborhoods,
        "n_categories": len(vocabulary.categories),
        "n_tags": len(vocabulary.tags),
        "n_vibes": len(vocabulary.vibes),
        "n_time_slots": len(vocabulary.time_slots),
        "n_price_bands": len(vocabulary.price_bands),
    }


VOCABULARY_SIZES = tuple(vocabulary_sizes(BUILTIN))


def has_place_content(vocabulary: Vocabulary) -> bool:
    """Whether places of this vocabulary can say what they are (categories or tags)."""
    return bool(vocabulary.categories or vocabulary.tags)


ID_EMBEDDINGS = ("", "place", "all")  # which node types of a feature world get a learned vector


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
    # The vocabulary's sizes (`for_vocabulary`): embedding tables and feature widths follow them.
    # The defaults are the built-in vocabulary's, which checkpoints from before these fields have.
    n_cities: int = BUILTIN.n_cities
    n_neighborhoods: int = BUILTIN.n_neighborhoods
    n_categories: int = len(BUILTIN.categories)
    n_tags: int = len(BUILTIN.tags)
    n_vibes: int = len(BUILTIN.vibes)
    n_time_slots: int = len(BUILTIN.time_slots)
    n_price_bands: int = len(BUILTIN.price_bands)
    use_social: bool = True
    # Extra edge-weight input: exp(-days since the pair's last event / 30).
    time_decay: bool = False
    # Linear taste path added to the output embeddings (see encoders.WideTaste).
    wide: bool = True
    # With features: a learned vector per node too (zero at first, so a node without training pairs
    # stays what its features and neighbours say), for what no column holds. "place": per place
    # only, so users stay inductive (what their history and friends pass them); "all": per user too.
    # Off by default: on world v2 per-user vectors memorised the training pairs (validation
    # Recall@20 0.30 at step 50, 0.18 by step 175).
    id_embeddings: Literal["", "place", "all"] = ""
    # With features: a learned offset per place added to its output embedding, of this rank
    # (n_places x rank coefficients, zero at first, along `rank` learned directions; 0: none), so
    # the retrieval score can carry what neither the place's columns nor its visitors' mean say
    # (world v2's hidden quality and appeal) without passing it on as messages.
    place_offsets: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.backbone not in ("sage", "gat"):
            problems.append(f"backbone must be 'sage' or 'gat', got {self.backbone!r}")
        if self.backbone == "gat" and self.d_model % self.gat_heads:
            problems.append(f"d_model ({self.d_model}) must be divisible by gat_heads ({self.gat_heads})")
        if self.id_embeddings not in ID_EMBEDDINGS:
            problems.append(f"id_embeddings must be one of {ID_EMBEDDINGS}, got {self.id_embeddings!r}")
        if not 0 <= self.place_offsets <= self.d_model:
            problems.append(f"place_offsets must be in [0, d_model], got {self.place_offsets}")
        if (self.featureless or self.id_embeddings or self.place_offsets) and (self.n_users < 1 or self.n_places < 1):
            problems.append("featureless mode and id embeddings need n_users and n_places")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @classmethod
    def for_vocabulary(cls, vocabulary: Vocabulary, **settings: Any) -> ModelConfig:
        """A config whose widths follow `vocabulary`; `settings` are the other hyperparameters."""
        return cls(**{**vocabulary_sizes(vocabulary), **settings})

    @classmethod
    def for_world(cls, vocabulary: Vocabulary, n_users: int, n_places: int, **settings: Any) -> ModelConfig:
        """The model for a world: feature encoders when its places can carry categories or tags,
        else featureless (a learned vector per user and place, `n_users` and `n_places` of them):
        with nothing to read, a feature encoder would give every place the same vector."""
        if has_place_content(vocabulary):
            learned = settings.get("id_embeddings") or settings.get("place_offsets")
            counts = {"n_users": n_users, "n_places": n_places} if learned else {}
            return cls.for_vocabulary(vocabulary, **{**counts, **settings})
        # Dropout off, as the real-data benchmark found best for id vectors.
        featureless = {"featureless": True, "n_users": n_users, "n_places": n_places, "wide": False, "dropout": 0.0}
        return cls.for_vocabulary(vocabulary, **{**settings, **featureless})

    def vocabulary_mismatches(self, vocabulary: Vocabulary) -> list[str]:
        """The sizes in which this config is not a model of `vocabulary` (empty when it is)."""
        return [
            f"{name} {getattr(self, name)} (vocabulary: {size})"
            for name, size in vocabulary_sizes(vocabulary).items()
            if getattr(self, name) != size
        ]

    @property
    def node_vector_types(self) -> tuple[str, ...]:
        """The node types with a learned vector beside their features (none when featureless)."""
        if self.featureless:
            return ()
        return {"": (), "place": ("place",), "all": ("user", "place")}[self.id_embeddings]

    @property
    def layouts(self) -> FeatureLayouts:
        """The feature layouts of the inputs this model reads."""
        return FeatureLayouts.for_sizes(self.n_categories, self.n_tags, self.n_vibes, self.n_neighborhoods)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        raw = json.loads(text)
        raw["head_hidden"] = tuple(raw["head_hidden"])
        if isinstance(raw.get("id_embeddings"), bool):  # configs from before the node-type choice
            raw["id_embeddings"] = "all" if raw["id_embeddings"] else ""
        return cls(**raw)
