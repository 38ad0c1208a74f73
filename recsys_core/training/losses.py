"""The multi-task objective: sampled-softmax retrieval, the re-ranking head, friend labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys_core.graph import GraphBundle
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import TrainConfig
from recsys_core.training.sampling import TrainingSampler

Embeddings = dict[str, torch.Tensor]


def gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row gather whose backward is deterministic (advanced indexing's is not with threads)."""
    return table.index_select(0, index)


def ranking_loss(pos: torch.Tensor, neg: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """BPR, or softmax cross-entropy of each positive against its row of negatives."""
    if config.loss == "bpr":
        return F.softplus(neg - pos).mean()
    logits = torch.cat([pos, neg], dim=1) / config.temperature
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))


def retrieval_loss(
    z: Embeddings, users: torch.Tensor, pos: torch.Tensor, sampler: TrainingSampler, config: TrainConfig
) -> torch.Tensor:
    """Sampled softmax of <z_u, z_p> against a shared pool of same-city places (+ in-batch positives).

    Negatives are shared per city, so scoring them is one matrix product per city instead of
    a (batch x negatives) gather. Every candidate's score is corrected by log Q (its expected
    count among the candidates) so popularity-skewed in-batch negatives do not bias scores.
    """
    # Rows sorted by city so each city's block is a contiguous split: slicing a big logit
    # matrix by index would make backward allocate and zero it once per city.
    city = sampler.user_city[users]
    order = torch.argsort(city, stable=True)
    users, pos, city = users[order], pos[order], city[order]
    logq = sampler.log_q
    z_u, z_pos = gather(z["user"], users), gather(z["place"], pos)
    pos_score = (z_u * z_pos).sum(-1, keepdim=True) - logq[pos][:, None]
    shared = pos[torch.randperm(len(pos), generator=sampler.g)[: config.in_batch_negatives]]
    z_shared = gather(z["place"], shared)
    cities, counts = torch.unique_consecutive(city, return_counts=True)
    sizes = counts.tolist()
    losses = []
    blocks = zip(
        cities.tolist(), torch.split(z_u, sizes), torch.split(pos, sizes), torch.split(pos_score, sizes), strict=True
    )
    for c, z_rows, pos_rows, pos_scores in blocks:
        pool = sampler.city_pool(c)
        candidates = torch.cat([pool, shared])
        scores = z_rows @ torch.cat([gather(z["place"], pool), z_shared]).T - logq[candidates][None, :]
        scores = scores.masked_fill(candidates[None, :] == pos_rows[:, None], float("-inf"))
        losses.append(ranking_loss(pos_scores, scores, config) * len(pos_rows))
    return torch.stack(losses).sum() / len(users)


def place_loss(
    model: GraphRec,
    z: Embeddings,
    inputs: GraphInputs,
    sampler: TrainingSampler,
    config: TrainConfig,
    batch: torch.Tensor,
) -> torch.Tensor:
    """Retrieval over the whole batch (`sampler.pairs()`, drawn before the step's graph pass so its
    pairs can be left out of it), plus the re-ranking head under context on a slice of it."""
    users, pos = sampler.users[batch], sampler.places[batch]
    retrieval = retrieval_loss(z, users, pos, sampler, config)
    # Stage 2 (re-ranking head) under the pair's context against same-city negatives, on a
    # slice of the batch (the head is the costly part of a step).
    rows = torch.arange(min(config.head_batch, len(users)))
    k = config.head_negatives
    u_h, pos_h = users[rows], pos[rows]
    neg_h = sampler.negatives(u_h, k)
    ctx = sampler.context(batch[rows], inputs, u_h)
    place_x = inputs.x["place"]
    z_u = gather(z["user"], u_h)
    pos_head = model.place_scores(z_u, gather(z["place"], pos_h), ctx, place_x[pos_h])
    rep = rows.repeat_interleave(k)
    neg_flat = neg_h.reshape(-1)
    neg_head = model.place_scores(gather(z_u, rep), gather(z["place"], neg_flat), ctx.index(rep), place_x[neg_flat])
    neg_head = neg_head.view(-1, k)
    head = ranking_loss(pos_head[:, None], neg_head, config)
    return retrieval + head


def friend_loss(
    model: GraphRec, z: Embeddings, inputs: GraphInputs, bundle: GraphBundle, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of the compatibility and attendance logits on labelled pairs."""
    u, v = bundle.friend_pairs[:, idx]
    compat, attend = model.friend_scores(
        gather(z["user"], u), gather(z["user"], v), inputs.x["user"][u], inputs.x["user"][v]
    )
    return (
        F.binary_cross_entropy_with_logits(compat, bundle.friend_compat[idx].float()),
        F.binary_cross_entropy_with_logits(attend, bundle.friend_attend[idx].float()),
    )
