"""The place and friend heads for one user at a time, in numpy: the serving hot path.

A request scores ~200 candidates with the same user and context. In torch that is ~60 small
ops whose fixed overhead (tens of microseconds each) costs more than the arithmetic. Here the
trained weights are exported once into numpy arrays, the first layer is split by input block
(user and context terms once per request; the place and product terms folded into one matrix
per request), and the request context's embedding is memoised. The friend head gets the same
treatment: its symmetric trunk sees each pair in both orders, but the terms the two orders share
(product, distance, raw pair features) are computed once. `tests/test_serving_fast_head.py`
holds them equal to `GraphRec.place_scores` and `GraphRec.friend_scores`.

Where the features' blocks are comes from the layouts the model reads (`model.config.layouts`,
or the served artifacts' layouts, which are checked to be the same), never from a constant.
"""

from __future__ import annotations

from functools import lru_cache
from typing import cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from recsys_core.features import Layout
from recsys_core.model.encoders import linear_at
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.heads import ANY_SLOT, PlaceContext

_COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's

# (kind, parameters) per layer: a linear layer's weight and bias, a norm's weight, bias and eps.
_Layers = list[tuple[str, tuple[NDArray[np.float32] | np.float32, ...]]]


def _layers(sequential: nn.Sequential) -> _Layers:
    """(kind, parameters) of an MLP's layers; dropout is the identity at inference."""
    out: _Layers = []
    for module in sequential:
        if isinstance(module, nn.Linear):
            out.append(("linear", (module.weight.detach().numpy().T.copy(), module.bias.detach().numpy().copy())))
        elif isinstance(module, nn.LayerNorm):
            out.append(
                (
                    "norm",
                    (
                        module.weight.detach().numpy().copy(),
                        module.bias.detach().numpy().copy(),
                        np.float32(module.eps),
                    ),
                )
            )
        elif isinstance(module, nn.ReLU):
            out.append(("relu", ()))
        elif not isinstance(module, nn.Dropout):
            raise TypeError(f"fast head cannot run a {type(module).__name__}")
    return out


def _tail(sequential: nn.Sequential) -> nn.Sequential:
    """All layers but the first: slicing a Sequential gives a Sequential (the stub says `Sequential | Module`)."""
    return cast(nn.Sequential, sequential[1:])


def _run(layers: _Layers, h: np.ndarray) -> np.ndarray:
    for kind, params in layers:
        if kind == "linear":
            h = h @ params[0] + params[1]
        elif kind == "norm":  # in place: h is a fresh intermediate here
            h -= h.mean(-1, keepdims=True)
            h *= 1.0 / np.sqrt(np.einsum("ij,ij->i", h, h)[:, None] / h.shape[1] + params[2])
            h *= params[0]
            h += params[1]
        else:
            np.maximum(h, 0.0, out=h)
    return h


def _check_width(what: str, x: np.ndarray, layout: Layout) -> None:
    if x.shape[1] not in (0, layout.width):
        raise ValueError(f"{what} features are {x.shape[1]} wide, but their layout is {layout.width} wide")


class FastPlaceHead:
    """`GraphRec.place_scores` for one user against many places under one request context.

    `slot` None (or the model's ANY_SLOT, or `any_slot`) is "no time slot asked for"; `layout`
    defaults to the place layout of the model's config.
    """

    def __init__(self, model: GraphRec, z_place: torch.Tensor, place_x: np.ndarray, layout: Layout | None = None):
        d, d_ctx = model.config.d_model, model.config.d_ctx
        layout = layout if layout is not None else model.config.layouts.place
        _check_width("place", place_x, layout)
        # "No time slot" as the context encoder's row for it: the one after the model's last slot.
        self.any_slot = model.config.n_time_slots
        self.n_categories, self.n_tags = model.config.n_categories, model.config.n_tags
        blocks = {k: v.numpy() for k, v in model.serving_blocks().items()}
        self.user_w, self.product_w, self.distance_w = blocks["user"], blocks["product"], blocks["distance"]
        self.ctx_w, self.match_w = blocks["ctx"], blocks["match"]
        self.bias = linear_at(model.place_head.mlp, 0).bias.detach().numpy().copy()
        self.rest = _layers(_tail(model.place_head.mlp))
        self.z_place = z_place.numpy()
        self.place_w = blocks["place"]
        self.has_features = place_x.shape[1] > 0
        if self.has_features:
            self.place_cats = place_x[:, layout["category_one_hot"]] > 0
            self.place_tags = place_x[:, layout["fine_tag_vector"]] > 0
            self.place_slot = place_x[:, layout["typical_time_slot"]][:, 0].astype(np.int64)
        # The cached function holds the model, not `self`: no reference cycle, so a replaced
        # version is freed by reference counting the moment its last request returns.
        encode, sizes = FastPlaceHead._encode_context, (self.n_categories, self.n_tags)
        self._context = lru_cache(maxsize=4096)(lambda key, model=model: encode(model, sizes, *key))
        if self.user_w.shape[0] != d or self.ctx_w.shape[0] != d_ctx:
            raise ValueError(
                f"place head blocks do not fit the model: {self.user_w.shape[0]} user rows for d_model={d}, "
                f"{self.ctx_w.shape[0]} context rows for d_ctx={d_ctx}"
            )

    @staticmethod
    @torch.no_grad()
    def _encode_context(
        model: GraphRec, sizes: tuple[int, int], city: int, slot: int, cats: tuple[int, ...], tags: tuple[int, ...]
    ) -> np.ndarray:
        n_categories, n_tags = sizes
        ctx = PlaceContext(
            torch.tensor([city]), torch.tensor([slot]), torch.zeros(1, n_categories), torch.zeros(1, n_tags)
        )
        ctx.categories[0, list(cats)] = 1.0
        ctx.tags[0, list(tags)] = 1.0
        encoded: torch.Tensor = model.context(ctx)
        return encoded[0].numpy()

    def _match(self, places: np.ndarray, slot: int, cats: tuple[int, ...], tags: tuple[int, ...]) -> np.ndarray:
        match = np.zeros((len(places), 3), np.float32)
        if not self.has_features:
            return match
        if cats:
            match[:, 0] = self.place_cats[places][:, list(cats)].any(axis=1)
        if tags:
            match[:, 1] = self.place_tags[places][:, list(tags)].sum(axis=1) / len(tags)
        if slot != self.any_slot:
            match[:, 2] = self.place_slot[places] == slot
        return match

    def wish_match(
        self, places: np.ndarray, slot: int | None, cats: tuple[int, ...], tags: tuple[int, ...]
    ) -> np.ndarray:
        """Per place, the share of a request's explicit wishes it meets (in [0, 1]): a category asked
        for, the share of the tags asked for, the time slot asked for; each wish counts once."""
        slot = self.any_slot if slot is None or slot == ANY_SLOT else slot
        asked = [bool(cats), bool(tags), slot != self.any_slot]
        if not any(asked) or not self.has_features:
            return np.zeros(len(places), np.float32)
        met: np.ndarray = self._match(places, slot, cats, tags)[:, asked].mean(axis=1)
        return met

    def scores(
        self,
        z_u: np.ndarray,
        places: np.ndarray,
        city: int,
        slot: int | None = None,
        cats: tuple[int, ...] = (),
        tags: tuple[int, ...] = (),
    ) -> np.ndarray:
        """<z_u, z_p> + head correction for one user against `places` under one context."""
        slot = self.any_slot if slot is None or slot == ANY_SLOT else slot
        z_p = self.z_place[places]
        once = z_u @ self.user_w + self._context((city, slot, cats, tags)) @ self.ctx_w + self.bias
        # z_p W_place + (z_u * z_p) W_product = z_p (W_place + diag(z_u) W_product): one matmul.
        first = z_p @ (self.place_w + z_u[:, None] * self.product_w)
        first += once
        first += np.abs(z_u - z_p) @ self.distance_w
        first += self._match(places, slot, cats, tags) @ self.match_w
        scores: NDArray[np.float32] = z_p @ z_u + _run(self.rest, first)[:, 0]
        return scores


def _unit_rows(x: np.ndarray) -> np.ndarray:
    unit: NDArray[np.float32] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _COSINE_EPS)
    return unit


class FastFriendHead:
    """`GraphRec.friend_scores` for one user against many candidates.

    The trunk's first layer on [z_a, z_b, z_u*z_v, |z_u-z_v|, pair] is split by block: the
    user's own terms once per request, the candidate's terms for both orders and the product in
    one matmul (z_v (W + diag(z_u) W_product)), distance and pair terms once for both orders.
    """

    def __init__(self, model: GraphRec, x_user: np.ndarray, layout: Layout | None = None):
        """`layout` defaults to the user layout of the model's config."""
        head, d = model.friend_head, model.config.d_model
        layout = layout if layout is not None else model.config.layouts.user
        _check_width("user", x_user, layout)
        first = linear_at(head.trunk, 0)
        w = first.weight.detach().numpy()
        self.first_w = w[:, :d].T.copy(), w[:, d : 2 * d].T.copy()  # the pair's first and second member
        self.product_w, self.distance_w, self.pair_w = (
            w[:, a:b].T.copy() for a, b in ((2 * d, 3 * d), (3 * d, 4 * d), (4 * d, w.shape[1]))
        )
        self.bias = first.bias.detach().numpy().copy()
        self.trunk_rest, self.compat, self.attend = (
            _layers(_tail(head.trunk)),
            _layers(head.compat),
            _layers(head.attend),
        )
        self.wide_w, self.wide_b = head.wide.weight.detach().numpy().T.copy(), head.wide.bias.detach().numpy().copy()
        self.has_features = x_user.shape[1] > 0
        if self.has_features:
            self.fine = _unit_rows(x_user[:, layout["fine_pref"]])
            self.vibe = _unit_rows(x_user[:, layout["vibe_pref"]])
            self.city, self.area = x_user[:, layout["city_id"]][:, 0], x_user[:, layout["area_freqs"]]

    def _pair(self, user: int, others: np.ndarray) -> np.ndarray:
        if not self.has_features:
            return np.zeros((len(others), self.pair_w.shape[0]), np.float32)
        same_city = self.city[others] == self.city[user]
        area = np.minimum(self.area[user], self.area[others]).sum(-1) * same_city
        return np.stack([self.fine[others] @ self.fine[user], self.vibe[others] @ self.vibe[user], area], -1).astype(
            np.float32
        )

    def scores(self, z_user: np.ndarray, user: int, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(compatibility logit, attendance logit) of `user` with each of `others`."""
        z_u, z_v, n = z_user[user], z_user[others], len(others)
        first_a, first_b = self.first_w
        pair = self._pair(user, others)
        product = z_u[:, None] * self.product_w  # (z_u * z_v) W_product = z_v (diag(z_u) W_product)
        both_orders = z_v @ np.concatenate([first_b + product, first_a + product], 1)
        shared = np.abs(z_u - z_v) @ self.distance_w + pair @ self.pair_w
        h = np.concatenate(
            [
                both_orders[:, : len(self.bias)] + (z_u @ first_a + self.bias),
                both_orders[:, len(self.bias) :] + (z_u @ first_b + self.bias),
            ]
        )
        h[:n] += shared
        h[n:] += shared
        h = _run(self.trunk_rest, h)
        trunk = np.maximum(0.5 * (h[:n] + h[n:]), 0.0)
        wide = pair @ self.wide_w + self.wide_b
        return _run(self.compat, trunk)[:, 0] + wide[:, 0], _run(self.attend, trunk)[:, 0] + wide[:, 1]
