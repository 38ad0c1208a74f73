"""Multi-task training of GraphRec: place ranking + friend compatibility + attendance.

Every step runs one full-graph pass (the default graphs fit in memory), then scores a large
batch of training pairs against sampled negatives. Validation Recall@20 on held-out pairs
drives early stopping and best-checkpoint selection; the test part is never looked at here.

With `checkpoint_dir` set, the whole training state (model, optimizer, step, best weights so
far, RNG states, history) is saved there every `checkpoint_every` steps and when training
stops, atomically, as a dict of tensors and plain values (loaded with weights_only=True:
nothing is unpickled). `resume=True` continues from that checkpoint: the step counter and
history carry on, and the run is step for step the one that was never interrupted. A
checkpoint of another graph, split or configuration is ignored (training starts afresh).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recsys_core.evaluation import metrics
from recsys_core.features import INTERACTION_EDGE_LAYOUT, PLACE_LAYOUT
from recsys_core.graph import INTERACTS, GraphBundle
from recsys_core.manifest import write_atomically
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.heads import ANY_SLOT, PlaceContext
from recsys_core.model.inputs import GraphInputs
from recsys_core.taxonomy import time_slot_of
from recsys_core.training.ranking import city_blocks, local_matrix, score_city
from recsys_core.training.split import Split, training_graph

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 300
    batch_size: int = 32768
    city_pool: int = 512  # shared same-city negatives per step
    in_batch_negatives: int = 1024
    head_batch: int = 2048
    head_negatives: int = 4
    loss: str = "softmax"  # or "bpr"
    temperature: float = 1.0
    lr: float = 3e-3
    lr_embeddings: float = 1e-2  # id embeddings (featureless mode) learn faster than dense layers
    lr_wide: float = 3e-2  # the linear feature paths (taste, pair features): safe to move fast
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    warmup_steps: int = 10
    lr_decay_on_plateau: float = 0.5
    eval_every: int = 10
    patience: int = 5
    eval_users: int = 1000
    eval_rerank_depth: int = 100  # validation re-ranks fewer candidates than serving, to stay cheap
    friend_batch: int = 4096
    lambda_place: float = 1.0
    lambda_friend: float = 0.5
    lambda_attend: float = 0.3
    engagement_weighted: bool = False
    hard_negative_share: float = 1.0  # head negatives: share from the user's city (rest: anywhere)
    context_dropout: float = 0.5
    time_budget_s: float = 600.0  # per run: a resumed run gets a fresh budget
    seed: int = 0
    checkpoint_dir: str = ""  # where the training state is saved ("": nowhere)
    checkpoint_every: int = 0  # steps between checkpoints (0: at every evaluation)
    resume: bool = False  # continue from the checkpoint in checkpoint_dir, if it fits this run


# Fields that may differ between a run and the run that resumes it.
RUN_ONLY = ("max_steps", "time_budget_s", "checkpoint_dir", "checkpoint_every", "resume")
CHECKPOINT_FILE = "train_state.pt"


@dataclass
class TrainResult:
    model: GraphRec
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_val_recall: float = float("nan")
    stopped_because: str = ""
    seconds: float = 0.0
    resumed_from_step: int = 0  # 0: trained from scratch


def gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row gather whose backward is deterministic (advanced indexing's is not with threads)."""
    return table.index_select(0, index)


def engagement_weight(edge_attr: torch.Tensor) -> torch.Tensor:
    """attended > saved > liked > viewed: 4 / 3 / 2 / 1."""
    attended = edge_attr[:, INTERACTION_EDGE_LAYOUT["attended"]].squeeze(-1) > 0
    saved = edge_attr[:, INTERACTION_EDGE_LAYOUT["saves"]].squeeze(-1) > 0
    liked = edge_attr[:, INTERACTION_EDGE_LAYOUT["likes"]].squeeze(-1) > 0
    return torch.where(attended, 4.0, torch.where(saved, 3.0, torch.where(liked, 2.0, 1.0)))


class _Sampler:
    """Training pairs, negatives from the user's city, friend-label batches; all seeded."""

    def __init__(self, bundle: GraphBundle, split: Split, inputs: GraphInputs, config: TrainConfig):
        self.g = torch.Generator().manual_seed(config.seed)
        self.config = config
        store = bundle.data[INTERACTS]
        train_edges = torch.from_numpy(split.train_edges)
        self.users, self.places = store.edge_index[0, train_edges], store.edge_index[1, train_edges]
        attr = store.edge_attr[train_edges] if "edge_attr" in store else None
        if attr is not None and attr.shape[1] != INTERACTION_EDGE_LAYOUT.width:
            attr = None  # not the contract's edge layout (e.g. a public dataset's single weight column)
        self.weights = engagement_weight(attr) if config.engagement_weighted and attr is not None else None
        self.slot = _dominant_slot(attr) if attr is not None else torch.full((len(train_edges),), ANY_SLOT)
        place_city = inputs.city["place"]
        order = torch.argsort(place_city, stable=True)
        self.places_by_city = order
        counts = torch.bincount(place_city, minlength=int(place_city.max()) + 1)
        self.city_start = torch.cumsum(counts, 0) - counts
        self.city_count = counts
        self.user_city = inputs.city["user"]
        self.labels = torch.from_numpy(split.train_labels)
        self.n_places = inputs.num_nodes["place"]
        # Expected number of times each place is a candidate of a row: uniform same-city
        # pool draws plus popularity-proportional in-batch draws.
        uniform = config.city_pool / counts.clamp_min(1)[place_city]
        popularity = torch.bincount(self.places, minlength=self.n_places).float() / max(len(self.places), 1)
        expected = uniform + config.in_batch_negatives * popularity
        self.log_q = torch.log(expected.clamp_min(1e-12))

    def pairs(self) -> torch.Tensor:
        n = len(self.users)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.config.batch_size, replacement=True, generator=self.g)
        return torch.randint(0, n, (self.config.batch_size,), generator=self.g)

    def city_pool(self, city: int) -> torch.Tensor:
        """A shared random sample of the city's places (with replacement)."""
        count = max(int(self.city_count[city]), 1)
        offset = torch.randint(0, count, (self.config.city_pool,), generator=self.g)
        return self.places_by_city[self.city_start[city] + offset]

    def negatives(self, users: torch.Tensor, k: int) -> torch.Tensor:
        city = self.user_city[users]
        count = self.city_count[city].clamp_min(1)
        offset = (torch.rand(len(users), k, generator=self.g) * count[:, None]).long()
        same_city = self.places_by_city[self.city_start[city][:, None] + offset]
        anywhere = torch.randint(0, self.n_places, (len(users), k), generator=self.g)
        hard = torch.rand(len(users), k, generator=self.g) < self.config.hard_negative_share
        return torch.where(hard, same_city, anywhere)

    def friend_batch(self) -> torch.Tensor:
        n = len(self.labels)
        return self.labels[torch.randint(0, n, (min(self.config.friend_batch, n),), generator=self.g)]


def _dominant_slot(attr: torch.Tensor) -> torch.Tensor:
    """Each pair's most frequent time slot, from its time-of-day and day-of-week shares."""
    tod = attr[:, INTERACTION_EDGE_LAYOUT["time_of_day"]].argmax(-1)
    weekend = attr[:, INTERACTION_EDGE_LAYOUT["day_of_week"]].argmax(-1)
    table = torch.tensor([[time_slot_of(t, w) for w in (0, 1)] for t in range(4)])
    return table[tod, weekend]


def _context(sampler: _Sampler, batch: torch.Tensor, inputs: GraphInputs, users: torch.Tensor, config: TrainConfig) -> PlaceContext:
    """The context of a training pair, randomly dropped so neutral requests are covered too.

    A kept context asks for the positive place's time slot, categories and (some of) its
    tags; negatives are scored under the same context, so the head learns to favour places
    that fit what was asked.
    """
    n = len(batch)
    city = sampler.user_city[users]
    place_x = inputs.x["place"]
    pos = sampler.places[batch]
    if place_x.shape[1] == 0:
        return PlaceContext.neutral(city)
    ctx = PlaceContext.neutral(city)
    keep_slot = torch.rand(n, generator=sampler.g) > config.context_dropout
    keep_wish = torch.rand(n, generator=sampler.g) > config.context_dropout
    ctx.time_slot = torch.where(keep_slot, sampler.slot[batch], torch.full((n,), ANY_SLOT))
    cats = (place_x[pos][:, PLACE_LAYOUT["category_one_hot"]] > 0).float()
    tags = (place_x[pos][:, PLACE_LAYOUT["fine_tag_vector"]] > 0).float()
    tags = tags * (torch.rand(tags.shape, generator=sampler.g) < 0.5)
    ctx.categories = cats * keep_wish[:, None]
    ctx.tags = tags * keep_wish[:, None]
    return ctx


def _retrieval_loss(z, users: torch.Tensor, pos: torch.Tensor, sampler: "_Sampler", config: TrainConfig) -> torch.Tensor:
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
    for c, z_rows, pos_rows, pos_scores in zip(cities.tolist(), z_u.split(sizes), pos.split(sizes), pos_score.split(sizes)):
        pool = sampler.city_pool(c)
        candidates = torch.cat([pool, shared])
        scores = z_rows @ torch.cat([gather(z["place"], pool), z_shared]).T - logq[candidates][None, :]
        scores = scores.masked_fill(candidates[None, :] == pos_rows[:, None], float("-inf"))
        losses.append(_ranking_loss(pos_scores, scores, config) * len(pos_rows))
    return torch.stack(losses).sum() / len(users)


def _place_loss(model: GraphRec, z, inputs: GraphInputs, sampler: _Sampler, config: TrainConfig) -> torch.Tensor:
    batch = sampler.pairs()
    users, pos = sampler.users[batch], sampler.places[batch]
    retrieval = _retrieval_loss(z, users, pos, sampler, config)
    # Stage 2 (re-ranking head) under the pair's context against same-city negatives, on a
    # slice of the batch (the head is the costly part of a step).
    rows = torch.arange(min(config.head_batch, len(users)))
    k = config.head_negatives
    u_h, pos_h = users[rows], pos[rows]
    neg_h = sampler.negatives(u_h, k)
    ctx = _context(sampler, batch[rows], inputs, u_h, config)
    place_x = inputs.x["place"]
    z_u = gather(z["user"], u_h)
    pos_head = model.place_scores(z_u, gather(z["place"], pos_h), ctx, place_x[pos_h])
    rep = rows.repeat_interleave(k)
    neg_flat = neg_h.reshape(-1)
    neg_head = model.place_scores(gather(z_u, rep), gather(z["place"], neg_flat), ctx.index(rep), place_x[neg_flat])
    neg_head = neg_head.view(-1, k)
    head = _ranking_loss(pos_head[:, None], neg_head, config)
    return retrieval + head


def _ranking_loss(pos: torch.Tensor, neg: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    if config.loss == "bpr":
        return F.softplus(neg - pos).mean()
    logits = torch.cat([pos, neg], dim=1) / config.temperature
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))


def _friend_loss(model: GraphRec, z, inputs: GraphInputs, bundle: GraphBundle, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = bundle.friend_pairs[:, idx]
    compat, attend = model.friend_scores(gather(z["user"], u), gather(z["user"], v), inputs.x["user"][u], inputs.x["user"][v])
    return (
        F.binary_cross_entropy_with_logits(compat, bundle.friend_compat[idx].float()),
        F.binary_cross_entropy_with_logits(attend, bundle.friend_attend[idx].float()),
    )


def validation_recall(
    model: GraphRec,
    inputs: GraphInputs,
    bundle: GraphBundle,
    split: Split,
    users: np.ndarray,
    k: int = 20,
    rerank_depth: int = 200,
) -> float:
    """Mean Recall@k over `users` on validation pairs, training pairs excluded, served order."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = model.embed(inputs)
        ei = bundle.data[INTERACTS].edge_index.numpy()
        recalls = []
        for city, u, p in city_blocks(inputs, users):
            exclude = local_matrix(ei[0, split.train_edges], ei[1, split.train_edges], u, p)
            truth = local_matrix(ei[0, split.val_edges], ei[1, split.val_edges], u, p)
            scores = score_city(model, z, inputs, city, u, p, exclude, rerank_depth)
            topk = metrics.top_k_excluding(scores, exclude, min(k, len(p)))
            recalls.append(metrics.recall_at_k(topk, truth))
    model.train(was_training)
    values = np.concatenate(recalls) if recalls else np.array([np.nan])
    return metrics.mean_ignoring_nan(values)


def _optimizer(model: GraphRec, config: TrainConfig) -> torch.optim.Optimizer:
    """Dense layers, id embeddings and the linear taste path each get their own learning rate."""
    embeddings = list(model.encoders.parameters()) if model.config.featureless else []
    wide = [p for name, p in model.named_parameters() if "wide." in name]  # the linear feature paths
    special = {id(p) for p in embeddings + wide}
    groups = [{"params": [p for p in model.parameters() if id(p) not in special], "lr": config.lr}]
    if embeddings:
        groups.append({"params": embeddings, "lr": config.lr_embeddings, "weight_decay": 0.0})
    if wide:
        groups.append({"params": wide, "lr": config.lr_wide, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def fingerprint(bundle: GraphBundle, split: Split, inputs: GraphInputs, model_config: ModelConfig, config: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: graph, split, model and training settings."""
    digest = hashlib.sha256(model_config.to_json().encode())
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_ONLY}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    arrays = [bundle.data[INTERACTS].edge_index, *(inputs.x[t] for t in sorted(inputs.x)),
              *(torch.from_numpy(np.ascontiguousarray(getattr(split, f.name))) for f in dataclasses.fields(Split))]
    for array in arrays:
        digest.update(str(tuple(array.shape)).encode())
        digest.update(array.contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_training_state(state: dict, directory: str | Path) -> Path:
    """torch.save, then written beside the checkpoint, fsynced and renamed: never half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return write_atomically(Path(directory) / CHECKPOINT_FILE, buffer.getvalue(), prefix=f".{CHECKPOINT_FILE}-")


def load_training_state(directory: str | Path) -> dict | None:
    """The saved training state, or None when there is none (weights_only: no arbitrary objects)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    return torch.load(path, weights_only=True)


def _resumable_state(directory: str, key: str) -> dict | None:
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


def train(
    bundle: GraphBundle, split: Split, model_config: ModelConfig, config: TrainConfig, progress=None
) -> TrainResult:
    """Train with early stopping on validation Recall@20; returns the best model (by validation)."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    inputs = GraphInputs.from_hetero(training_graph(bundle, split), model_config.use_social, model_config.time_decay)
    model = GraphRec(model_config, inputs.edge_dims())
    optimizer = _optimizer(model, config)
    # Linear warm-up, then a constant rate that halves whenever validation stops improving:
    # a fixed decay schedule starves short CPU runs long before they converge.
    peak_lr = [group["lr"] for group in optimizer.param_groups]
    sampler = _Sampler(bundle, split, inputs, config)
    val_users = np.unique(bundle.data[INTERACTS].edge_index[0, torch.from_numpy(split.val_edges)].numpy())
    rng = np.random.default_rng(config.seed)
    if len(val_users) > config.eval_users:
        val_users = np.sort(rng.choice(val_users, config.eval_users, replace=False))
    result = TrainResult(model=model)
    best_state, bad_evals = None, 0
    first_step, seconds_before, early_stop = 1, 0.0, ""
    checkpoints = bool(config.checkpoint_dir)
    key = fingerprint(bundle, split, inputs, model_config, config) if checkpoints else ""
    saved = _resumable_state(config.checkpoint_dir, key) if checkpoints and config.resume else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        best_state = saved["best"] or None
        bad_evals, early_stop = saved["bad_evals"], saved["early_stop"]
        result.best_step, result.best_val_recall = saved["best_step"], saved["best_val_recall"]
        result.history = list(saved["history"])
        result.resumed_from_step, first_step = saved["step"], saved["step"] + 1
        seconds_before = saved["seconds"]
        torch.set_rng_state(saved["torch_rng"])
        sampler.g.set_state(saved["sampler_rng"])
        logger.info("resuming training from step %d (checkpoint in %s)", saved["step"], config.checkpoint_dir)
    every = config.checkpoint_every or config.eval_every

    def checkpoint(step: int) -> None:
        save_training_state({
            "fingerprint": key, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "best": best_state or {}, "best_step": result.best_step, "best_val_recall": result.best_val_recall,
            "bad_evals": bad_evals, "early_stop": early_stop, "history": result.history,
            "seconds": seconds_before + time.perf_counter() - started,
            "torch_rng": torch.get_rng_state(), "sampler_rng": sampler.g.get_state(),
        }, config.checkpoint_dir)

    has_labels = len(split.train_labels) > 0
    model.train()
    for step in range(first_step, config.max_steps + 1):
        if early_stop:  # the checkpoint's run had stopped for good: nothing to continue
            break
        if step <= config.warmup_steps:
            for group, peak in zip(optimizer.param_groups, peak_lr):
                group["lr"] = peak * step / config.warmup_steps
        z = model.embed(inputs)
        place_loss = _place_loss(model, z, inputs, sampler, config)
        loss = config.lambda_place * place_loss
        friend_loss = attend_loss = torch.tensor(0.0)
        if has_labels and config.lambda_friend + config.lambda_attend > 0:
            friend_loss, attend_loss = _friend_loss(model, z, inputs, bundle, sampler.friend_batch())
            loss = loss + config.lambda_friend * friend_loss + config.lambda_attend * attend_loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        elapsed = time.perf_counter() - started
        record = {"step": step, "loss": loss.item(), "place_loss": place_loss.item(), "friend_loss": friend_loss.item(),
                  "attend_loss": attend_loss.item(), "seconds": seconds_before + elapsed}
        out_of_time = elapsed > config.time_budget_s
        if step % config.eval_every == 0 or step == config.max_steps or out_of_time:
            record["val_recall@20"] = validation_recall(
                model, inputs, bundle, split, val_users, rerank_depth=config.eval_rerank_depth
            )
            if not result.history or record["val_recall@20"] > result.best_val_recall or math.isnan(result.best_val_recall):
                result.best_val_recall, result.best_step = record["val_recall@20"], step
                best_state, bad_evals = copy.deepcopy(model.state_dict()), 0
            else:
                bad_evals += 1
                for group in optimizer.param_groups:
                    group["lr"] *= config.lr_decay_on_plateau
            rate = (step - first_step + 1) / elapsed
            logger.info(
                "step %d/%d loss %.4f val recall@20 %.4f (best %.4f @ %d) %.2f steps/s ETA %.0fs",
                step, config.max_steps, record["loss"], record["val_recall@20"], result.best_val_recall,
                result.best_step, rate, (config.max_steps - step) / rate,
            )
        result.history.append(record)
        if progress:
            progress(record)
        if bad_evals >= config.patience:
            early_stop = f"early stop: no validation gain in {config.patience} evaluations"
        if checkpoints and (step % every == 0 or early_stop or out_of_time or step == config.max_steps):
            checkpoint(step)
        if early_stop:
            break
        if out_of_time:
            result.stopped_because = f"time budget of {config.time_budget_s:.0f}s reached"
            break
    else:
        result.stopped_because = "max_steps reached"
    result.stopped_because = early_stop or result.stopped_because
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = seconds_before + time.perf_counter() - started
    return result
