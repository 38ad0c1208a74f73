"""Node encoders: raw feature rows (or ids) -> D_MODEL vectors before message passing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.features import FeatureLayouts
from recsys_core.model.config import ModelConfig


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def linear_at(sequential: nn.Sequential, index: int) -> nn.Linear:
    """The `index`-th layer of an `mlp`, where a Linear sits (its first and its last layer)."""
    layer = sequential[index]
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer {index} of the MLP is a {type(layer).__name__}, not a Linear")
    return layer


class KnownOrUnknown(nn.Module):
    """An embedding table whose UNKNOWN (-1) ids (a place without a known price band or
    neighbourhood) embed as zeros: the unknown adds nothing, and the layers after it learn what
    its absence means. A fixed vector, not a parameter, so a world where every id is known trains
    exactly as it would without it, and checkpoints keep their keys."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.known = nn.Embedding(num, dim)
        self.register_buffer("unknown", torch.zeros(1, dim), persistent=False)

    @property
    def num_embeddings(self) -> int:
        """Known ids (the UNKNOWN vector aside)."""
        return self.known.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        unknown = self.get_buffer("unknown")
        table = torch.cat([self.known.weight, unknown], dim=0)
        return F.embedding(torch.where(ids < 0, self.known.num_embeddings, ids), table)


class _LocationEmbedding(nn.Module):
    """City and neighbourhood embeddings; neighbourhood ids are per city, so they are made global."""

    def __init__(self, config: ModelConfig, city_dim: int = 16, neighborhood_dim: int = 32):
        super().__init__()
        self.n_neighborhoods = config.n_neighborhoods
        self.city = nn.Embedding(config.n_cities, city_dim)
        self.neighborhood = KnownOrUnknown(config.n_cities * config.n_neighborhoods, neighborhood_dim)
        self.dim = city_dim + neighborhood_dim

    def forward(self, city: torch.Tensor, neighborhood: torch.Tensor) -> torch.Tensor:
        local = torch.where(neighborhood < 0, -1, city * self.n_neighborhoods + neighborhood)
        return torch.cat([self.city(city), self.neighborhood(local)], dim=-1)


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length: taste vectors compared by cosine become linear to match."""
    norm: torch.Tensor = x.norm(dim=-1, keepdim=True)  # Tensor.norm is unannotated: Any
    return x / norm.clamp_min(1e-8)


class UserEncoder(nn.Module):
    """City + neighbourhood embeddings, preferences, area frequencies, behaviour -> MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layout = config.layouts.user
        self.location = _LocationEmbedding(config)
        continuous = self.layout.width - 2 + self.layout.size("fine_pref")
        self.mlp = mlp([self.location.dim + continuous, 2 * config.d_model, config.d_model], config.dropout)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        city = x[:, self.layout["city_id"]].squeeze(-1).long()
        home = x[:, self.layout["home_neighborhood_id"]].squeeze(-1).long()
        fine = unit(x[:, self.layout["fine_pref"]])
        out: torch.Tensor = self.norm(self.mlp(torch.cat([self.location(city, home), x[:, 2:], fine], dim=-1)))
        return out


class PlaceEncoder(nn.Module):
    """City, neighbourhood, price band and time slot embeddings + categories, tags, popularity -> MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layout = config.layouts.place
        self.location = _LocationEmbedding(config)
        self.price = KnownOrUnknown(config.n_price_bands, 8)
        self.slot = KnownOrUnknown(config.n_time_slots, 8)
        self.continuous = [self.layout[name] for name in ("category_one_hot", "fine_tag_vector", "popularity")]
        width = sum(s.stop - s.start for s in self.continuous) + self.layout.size("fine_tag_vector")
        self.mlp = mlp([self.location.dim + 16 + width, 2 * config.d_model, config.d_model], config.dropout)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def col(name: str) -> torch.Tensor:
            return x[:, self.layout[name]].squeeze(-1).long()

        parts = [
            self.location(col("city_id"), col("neighborhood_id")),
            self.price(col("price_band")),
            self.slot(col("typical_time_slot")),
            *(x[:, s] for s in self.continuous),
            unit(x[:, self.layout["fine_tag_vector"]]),
        ]
        out: torch.Tensor = self.norm(self.mlp(torch.cat(parts, dim=-1)))
        return out


def user_taste_inputs(x: torch.Tensor, layouts: FeatureLayouts) -> torch.Tensor:
    """What a user wants, in the same coordinates as `place_taste_inputs` describes a place."""
    user = layouts.user
    return torch.cat([unit(x[:, user["fine_pref"]]), x[:, user["cat_pref"]], x[:, user["area_freqs"]]], dim=-1)


def place_taste_inputs(x: torch.Tensor, layouts: FeatureLayouts) -> torch.Tensor:
    """What a place offers: unit tag vector, categories, neighbourhood one-hot, popularity."""
    place = layouts.place
    neighborhood = x[:, place["neighborhood_id"]].squeeze(-1).long()
    local = F.one_hot(neighborhood + 1, layouts.user.size("area_freqs") + 1)[:, 1:].float()  # UNKNOWN: no slot
    return torch.cat(
        [unit(x[:, place["fine_tag_vector"]]), x[:, place["category_one_hot"]], local, x[:, place["popularity"]]],
        dim=-1,
    )


class WideTaste(nn.Module):
    """A linear path from taste features straight to the output embedding (wide & deep).

    <W_u t_u + b_u, W_p t_p + b_p> is a low-rank bilinear form of the raw tastes: it can
    express "fine-taste cosine + category match + frequented neighbourhood + popularity"
    exactly, which deep LayerNorm/ReLU towers only approximate after many steps. The GNN
    path adds what the features do not say (who actually goes where, friends' places).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layouts = config.layouts
        user = self.layouts.user
        user_width = user.size("fine_pref") + user.size("cat_pref") + user.size("area_freqs")
        place_width = user_width + self.layouts.place.size("popularity")
        self.user = nn.Linear(user_width, config.d_model)
        self.place = nn.Linear(place_width, config.d_model)
        for layer in (self.user, self.place):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "user": self.user(user_taste_inputs(x["user"], self.layouts)),
            "place": self.place(place_taste_inputs(x["place"], self.layouts)),
        }


class IdEncoder(nn.Module):
    """A learned vector per node, for data without node features."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding.weight
