"""GraphRec: encoders -> heterogeneous message passing -> place and friend heads.

Place scoring has two stages that share embeddings: <z_u, z_p> retrieves candidates (it is
what the ANN index serves) and the place head re-ranks them with the request context.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_core.features import FeatureLayouts
from recsys_core.model.backbone import HeteroBackbone
from recsys_core.model.config import ModelConfig
from recsys_core.model.encoders import IdEncoder, PlaceEncoder, UserEncoder, WideTaste
from recsys_core.model.heads import ContextEncoder, FriendHead, PlaceContext, PlaceHead, match_features, pair_features
from recsys_core.model.inputs import GraphInputs
from recsys_core.vocabulary import Vocabulary


class GraphRec(nn.Module):
    def __init__(self, config: ModelConfig, edge_dims: dict[tuple[str, str, str], int]):
        super().__init__()
        self.config = config
        self.layouts: FeatureLayouts = config.layouts  # of the node features it reads (built once)
        self.edge_dims = dict(edge_dims)
        if config.featureless:
            self.encoders = nn.ModuleDict(
                {"user": IdEncoder(config.n_users, config.d_model), "place": IdEncoder(config.n_places, config.d_model)}
            )
        else:
            self.encoders = nn.ModuleDict({"user": UserEncoder(config), "place": PlaceEncoder(config)})
        self.node_vectors: nn.ModuleDict | None = None
        if config.node_vector_types:
            counts = {"user": config.n_users, "place": config.n_places}
            tables = {t: nn.Embedding(counts[t], config.d_model) for t in config.node_vector_types}
            for table in tables.values():
                nn.init.zeros_(table.weight)  # untrained nodes (no pairs) keep their features' vector
            self.node_vectors = nn.ModuleDict(tables)
        self.place_offsets: nn.Embedding | None = None
        self.offset_directions: nn.Linear | None = None
        if config.place_offsets and not config.featureless:
            self.place_offsets = nn.Embedding(config.n_places, config.place_offsets)
            nn.init.zeros_(self.place_offsets.weight)  # a place without training pairs: its features' vector
            self.offset_directions = nn.Linear(config.place_offsets, config.d_model, bias=False)
        self.backbone = HeteroBackbone(config, edge_dims)
        # Unnormalized output projections: the length of z_p can carry popularity.
        projections = {t: nn.Linear(config.d_model, config.d_model) for t in ("user", "place")}
        self.project = nn.ModuleDict(projections)
        for layer in projections.values():
            # Start with small dot products (as MF does): large random logits at init
            # saturate the softmax and slow learning down by an order of magnitude.
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.wide = WideTaste(config) if config.wide and not config.featureless else None
        self.context = ContextEncoder(config)
        self.place_head = PlaceHead(config)
        self.friend_head = FriendHead(config)

    def check_fits(self, vocabulary: Vocabulary, inputs: GraphInputs | None = None) -> None:
        """Raise ValueError unless this model's widths are those of `vocabulary` (and of `inputs`' features)."""
        problems = self.config.vocabulary_mismatches(vocabulary)
        if inputs is not None:
            if self.config.featureless or self.config.id_embeddings or self.config.place_offsets:
                counts = {"user": self.config.n_users, "place": self.config.n_places}
                problems += [
                    f"{node}s: {inputs.num_nodes[node]} in the graph, {n} in the model"
                    for node, n in counts.items()
                    if inputs.num_nodes[node] != n
                ]
            for node, layout in (("user", self.layouts.user), ("place", self.layouts.place)):
                width = inputs.x[node].shape[1]
                if width and width != layout.width:
                    problems.append(f"{node} features {width} wide (model: {layout.width})")
        if problems:
            raise ValueError("the model does not fit the graph's vocabulary: " + "; ".join(problems))

    def embed(self, inputs: GraphInputs) -> dict[str, torch.Tensor]:
        """Final embeddings of every user and place (full-graph pass)."""
        h = {t: self.encoders[t](inputs.x[t]) for t in ("user", "place")}
        if self.node_vectors is not None:
            h = {t: h[t] + self.node_vectors[t].weight if t in self.node_vectors else h[t] for t in h}
        if self.config.n_layers:
            h = self.backbone(h, inputs)
        z = {t: self.project[t](h[t]) for t in h}
        if self.place_offsets is not None and self.offset_directions is not None:
            z["place"] = z["place"] + self.offset_directions(self.place_offsets.weight)
        if self.wide is not None:
            wide = self.wide(inputs.x)
            z = {t: z[t] + wide[t] for t in z}
        return z

    @staticmethod
    def retrieval_scores(z_u: torch.Tensor, z_p: torch.Tensor) -> torch.Tensor:
        return (z_u * z_p).sum(-1)

    def place_scores(
        self, z_u: torch.Tensor, z_p: torch.Tensor, ctx: PlaceContext, place_x: torch.Tensor
    ) -> torch.Tensor:
        """Re-ranking score of aligned (user, place, context) rows."""
        correction: torch.Tensor = self.place_head(
            z_u, z_p, self.context(ctx), match_features(ctx, place_x, self.layouts)
        )
        return self.retrieval_scores(z_u, z_p) + correction

    def serving_blocks(self) -> dict[str, torch.Tensor]:
        """Request-independent pieces of the place head, computed once per loaded model."""
        return self.place_head.first_layer_blocks(self.config.d_model, self.config.d_ctx)

    def friend_scores(
        self, z_u: torch.Tensor, z_v: torch.Tensor, x_u: torch.Tensor, x_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(compatibility logit, attendance logit) of aligned user pairs."""
        scores: tuple[torch.Tensor, torch.Tensor] = self.friend_head(z_u, z_v, pair_features(x_u, x_v, self.layouts))
        return scores
