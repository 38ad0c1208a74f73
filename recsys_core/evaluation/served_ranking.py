"""Full ranking of a city's places for its users, the way the service ranks them.

Stage 1 scores every place of the city by <z_u, z_p> (what the ANN index retrieves);
stage 2 re-scores each user's top `rerank_depth` with the place head and the request
context. The result is a dense score matrix whose order is the served order, so the
ranking metrics measure exactly the two-stage pipeline.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.model.graphrec import GraphRec
from recsys_core.model.heads import PlaceContext
from recsys_core.model.inputs import GraphInputs

RERANK_OFFSET = 1e6  # re-ranked candidates always come before the rest


def city_blocks(inputs: GraphInputs, users: np.ndarray | None = None) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(city, user indices, place indices) for every city that has both."""
    user_city = inputs.city["user"].numpy()
    place_city = inputs.city["place"].numpy()
    users = np.arange(len(user_city)) if users is None else users
    blocks = []
    for city in np.unique(user_city[users]):
        u = users[user_city[users] == city]
        p = np.flatnonzero(place_city == city)
        if len(u) and len(p):
            blocks.append((int(city), u, p))
    return blocks


@torch.no_grad()
def score_city(
    model: GraphRec,
    z: dict[str, torch.Tensor],
    inputs: GraphInputs,
    city: int,
    users: np.ndarray,
    places: np.ndarray,
    exclude: sp.csr_matrix | None,
    rerank_depth: int = 200,
    chunk: int = 256,
) -> np.ndarray:
    """(len(users), len(places)) scores in served order; `exclude` is (users x places) local."""
    # float64: the re-rank offset must not swallow the differences between head scores.
    scores = (z["user"][users] @ z["place"][places].T).numpy().astype(np.float64)
    if exclude is not None and exclude.nnz:
        scores[exclude.nonzero()] = -np.inf
    depth = min(rerank_depth, len(places))
    if depth == 0:
        return scores
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    place_x = inputs.x["place"]
    for start in range(0, len(users), chunk):
        rows = np.arange(start, min(start + chunk, len(users)))
        cand = top[rows]
        u = torch.from_numpy(np.repeat(users[rows], depth))
        p = torch.from_numpy(places[cand.ravel()])
        ctx = PlaceContext.neutral(torch.full((len(u),), city, dtype=torch.long), model.layouts)
        head = model.place_scores(z["user"][u], z["place"][p], ctx, place_x[p]).numpy().astype(np.float64)
        head = head.reshape(len(rows), depth)
        valid = np.isfinite(np.take_along_axis(scores[rows], cand, axis=1))
        block = scores[rows]
        np.put_along_axis(block, cand, np.where(valid, head + RERANK_OFFSET, -np.inf), axis=1)
        scores[rows] = block
    return scores


def local_matrix(
    pairs_user: np.ndarray, pairs_place: np.ndarray, users: np.ndarray, places: np.ndarray
) -> sp.csr_matrix:
    """Pairs (global indices) restricted to a block, as a (users x places) 0/1 matrix."""
    u_pos = np.full(int(max(users.max(), pairs_user.max(initial=0))) + 1, -1)
    u_pos[users] = np.arange(len(users))
    p_pos = np.full(int(max(places.max(), pairs_place.max(initial=0))) + 1, -1)
    p_pos[places] = np.arange(len(places))
    ru, rp = u_pos[pairs_user], p_pos[pairs_place]
    keep = (ru >= 0) & (rp >= 0)
    return sp.csr_matrix((np.ones(keep.sum(), np.float32), (ru[keep], rp[keep])), shape=(len(users), len(places)))
