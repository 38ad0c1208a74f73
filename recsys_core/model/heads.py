"""Task heads: the request context, the place-scoring head and the friend head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.features import FeatureLayouts
from recsys_core.model.config import ModelConfig
from recsys_core.model.encoders import linear_at, mlp

# "No time slot asked for", whatever the vocabulary's slots: the context encoder gives it the row
# after the vocabulary's last slot, and it never matches a place's slot. That row's own index,
# `config.n_time_slots`, means the same everywhere (same embedding row, never a place's slot).
ANY_SLOT = -1
N_MATCH_FEATURES = 3
N_PAIR_FEATURES = 3


@dataclass
class PlaceContext:
    """What a request asks for, one row per scored pair (or one row broadcast to all)."""

    city: torch.Tensor  # (B,) long
    time_slot: torch.Tensor  # (B,) long, ANY_SLOT when unspecified
    categories: torch.Tensor  # (B, n_categories) multi-hot
    tags: torch.Tensor  # (B, n_tags) multi-hot

    @classmethod
    def neutral(cls, city: torch.Tensor, layouts: FeatureLayouts) -> PlaceContext:
        """Nothing asked for but the city; widths are those of the places' features (`layouts`)."""
        n = len(city)
        categories = torch.zeros(n, layouts.place.size("category_one_hot"))
        return cls(city, torch.full((n,), ANY_SLOT), categories, torch.zeros(n, layouts.place.size("fine_tag_vector")))

    def index(self, idx: torch.Tensor) -> PlaceContext:
        return PlaceContext(self.city[idx], self.time_slot[idx], self.categories[idx], self.tags[idx])


class ContextEncoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.any_slot = config.n_time_slots  # the slot embedding's row for ANY_SLOT
        self.city = nn.Embedding(config.n_cities, 8)
        self.slot = nn.Embedding(config.n_time_slots + 1, 8)
        self.wishes = nn.Linear(config.n_categories + config.n_tags, 16)
        self.out = nn.Linear(32, config.d_ctx)

    def forward(self, ctx: PlaceContext) -> torch.Tensor:
        wishes = F.relu(self.wishes(torch.cat([ctx.categories, ctx.tags], dim=-1)))
        slot = torch.where(ctx.time_slot == ANY_SLOT, self.any_slot, ctx.time_slot)
        out: torch.Tensor = self.out(torch.cat([self.city(ctx.city), self.slot(slot), wishes], dim=-1))
        return out


def match_features(ctx: PlaceContext, place_x: torch.Tensor, layouts: FeatureLayouts) -> torch.Tensor:
    """How well each place fits the request: category, tag and time-slot match (0 when not asked).

    `place_x` rows are in `layouts.place` (the model's `config.layouts`).
    """
    if place_x.shape[1] == 0:
        return torch.zeros(len(ctx.city), N_MATCH_FEATURES)
    place = layouts.place
    cats = place_x[:, place["category_one_hot"]]
    tags = (place_x[:, place["fine_tag_vector"]] > 0).float()
    slot = place_x[:, place["typical_time_slot"]].squeeze(-1).long()
    cat_match = ((ctx.categories * (cats > 0)).sum(-1) > 0).float()
    tag_match = (ctx.tags * tags).sum(-1) / ctx.tags.sum(-1).clamp_min(1.0)
    slot_match = ((slot == ctx.time_slot) & (ctx.time_slot != ANY_SLOT)).float()
    return torch.stack([cat_match, tag_match, slot_match], dim=-1)


def pair_features(x_u: torch.Tensor, x_v: torch.Tensor, layouts: FeatureLayouts) -> torch.Tensor:
    """Raw-feature similarity of two users: fine-taste cosine, vibe cosine, neighbourhood overlap.

    `x_u` / `x_v` rows are in `layouts.user` (the model's `config.layouts`).
    """
    if x_u.shape[1] == 0:
        return torch.zeros(len(x_u), N_PAIR_FEATURES)
    user = layouts.user
    fine = F.cosine_similarity(x_u[:, user["fine_pref"]], x_v[:, user["fine_pref"]], dim=-1)
    vibe = F.cosine_similarity(x_u[:, user["vibe_pref"]], x_v[:, user["vibe_pref"]], dim=-1)
    same_city = (x_u[:, user["city_id"]] == x_v[:, user["city_id"]]).squeeze(-1).float()
    area = torch.minimum(x_u[:, user["area_freqs"]], x_v[:, user["area_freqs"]]).sum(-1) * same_city
    return torch.stack([fine, vibe, area], dim=-1)


def _interaction(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([a, b, a * b, (a - b).abs()], dim=-1)


class PlaceHead(nn.Module):
    """[z_u, z_p, z_u*z_p, |z_u-z_p|, ctx, match] -> MLP -> a correction on top of <z_u, z_p>."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = 4 * config.d_model + config.d_ctx + N_MATCH_FEATURES
        self.mlp = mlp([width, *config.head_hidden, 1], config.head_dropout)

    def forward(self, z_u: torch.Tensor, z_p: torch.Tensor, ctx: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.mlp(torch.cat([_interaction(z_u, z_p), ctx, match], dim=-1))
        return out.squeeze(-1)

    def first_layer_blocks(self, d: int, d_ctx: int) -> dict[str, torch.Tensor]:
        """The first layer's weight split by input block, each transposed and contiguous (serving)."""
        w = linear_at(self.mlp, 0).weight.detach()
        cuts = {
            "user": (0, d),
            "place": (d, 2 * d),
            "product": (2 * d, 3 * d),
            "distance": (3 * d, 4 * d),
            "ctx": (4 * d, 4 * d + d_ctx),
            "match": (4 * d + d_ctx, w.shape[1]),
        }
        return {name: w[:, a:b].T.contiguous() for name, (a, b) in cuts.items()}


class FriendHead(nn.Module):
    """Shared trunk; a compatibility logit and an attendance logit.

    The raw pair features (taste cosine, vibe cosine, shared neighbourhoods) also reach both
    logits linearly: a wide path that is right from the first steps, which the deep trunk
    then corrects, instead of having to rediscover a cosine among 500 inputs.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.head_hidden
        self.trunk = mlp([4 * config.d_model + N_PAIR_FEATURES, hidden[0], hidden[0]], config.head_dropout)
        self.compat = mlp([hidden[0], hidden[-1], 1], 0.0)
        self.attend = mlp([hidden[0], hidden[-1], 1], 0.0)
        self.wide = nn.Linear(N_PAIR_FEATURES, 2)
        for out in (linear_at(self.compat, -1), linear_at(self.attend, -1)):  # the deep correction starts near zero
            nn.init.normal_(out.weight, std=0.01)
            nn.init.zeros_(out.bias)

    def forward(self, z_u: torch.Tensor, z_v: torch.Tensor, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Symmetric in (u, v): the trunk sees the pair in both orders and averages.
        both = self.trunk(
            torch.cat([torch.cat([_interaction(z_u, z_v), pair], -1), torch.cat([_interaction(z_v, z_u), pair], -1)])
        )
        shared = 0.5 * (both[: len(z_u)] + both[len(z_u) :])
        shared = F.relu(shared)
        wide = self.wide(pair)
        return self.compat(shared).squeeze(-1) + wide[:, 0], self.attend(shared).squeeze(-1) + wide[:, 1]
