"""Shared plumbing for the baseline recommenders: input checks, per-user standardization, BPR sampling and
training loop."""

from __future__ import annotations

import logging
import time
from typing import Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)


def as_interactions(train: sp.spmatrix | sp.sparray | ArrayLike, binarize: bool = False) -> sp.csr_matrix:
    """A canonical float32 CSR copy of an implicit-feedback matrix (duplicates summed, zeros dropped)."""
    if not sp.issparse(train):
        train = sp.csr_matrix(np.asarray(train))
    m = sp.csr_matrix(train, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    if m.nnz and m.data.min() < 0:
        raise ValueError("interaction matrix must have non-negative values")
    if binarize:
        m.data[:] = 1.0
    m.sort_indices()
    return m


def row_standardize(scores: np.ndarray) -> np.ndarray:
    """Per-user z-scores, so differently scaled models can be blended with one weight."""
    scores = np.asarray(scores, dtype=np.float32)
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    out: NDArray[np.float32] = (scores - mean) / np.maximum(std, 1e-8)
    return out


def as_user_index(users: ArrayLike, n_users: int) -> NDArray[np.int64]:
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise IndexError(f"user index out of range [0, {n_users})")
    return users


def _fmt_s(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}min"


class BPRModel:
    """Base class for embedding models trained with BPR on (user, positive, negative) triples.

    Subclasses implement ``_init_params(n_users, n_items, train, generator) -> list[Parameter]``,
    ``_batch_embeddings(u, p, n) -> (u_emb, p_emb, n_emb, u_ego, p_ego, n_ego)`` and
    ``_final_embeddings() -> (user_emb, item_emb)``.

    Training: each epoch visits every observed (user, item) pair once in a random order
    (vectorised batches drawn from the COO arrays of ``train``); each positive gets one
    uniformly random negative item, and negatives that hit a training positive are resampled
    once (a few collisions may remain, which is tolerated). Loss per batch is
    ``mean(softplus(s_neg - s_pos)) + reg * 0.5 * (|e_u|^2 + |e_p|^2 + |e_n|^2) / batch``
    on the ego (layer-0) embeddings, optimised with Adam. Interaction weights are ignored
    (every nonzero is a positive).

    Attributes after ``fit``: ``history`` (mean loss per epoch, the last one possibly partial
    if the time budget ran out), ``stopped_early``, ``fit_seconds``.
    """

    def __init__(
        self,
        dim: int,
        epochs: int,
        lr: float,
        reg: float,
        batch_size: int,
        seed: int,
        time_budget_s: float | None,
        log_every_s: float,
        init_std: float,
    ) -> None:
        if dim <= 0 or epochs < 0 or batch_size <= 0:
            raise ValueError("dim and batch_size must be positive, epochs non-negative")
        self.dim = int(dim)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.time_budget_s = time_budget_s
        self.log_every_s = float(log_every_s)
        self.init_std = float(init_std)
        self.history: list[float] = []
        self.stopped_early = False
        self.fit_seconds = 0.0
        self.n_users = 0
        self.n_items = 0
        self._user_emb: np.ndarray | None = None
        self._item_emb: np.ndarray | None = None

    # -- subclass hooks -------------------------------------------------------------------
    def _init_params(  # pragma: no cover - abstract
        self, n_users: int, n_items: int, train: sp.csr_matrix, generator: torch.Generator
    ) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def _batch_embeddings(  # pragma: no cover - abstract
        self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------
    def fit(self, train: sp.csr_matrix) -> Self:
        train = as_interactions(train, binarize=True)
        n_users, n_items = train.shape
        if train.nnz == 0:
            raise ValueError("cannot fit on an empty interaction matrix")
        self.n_users, self.n_items = n_users, n_items
        coo = train.tocoo()
        pos_u = coo.row.astype(np.int64)
        pos_i = coo.col.astype(np.int64)
        keys = pos_u * n_items + pos_i
        keys.sort()  # sorted (u, i) keys for vectorised membership tests
        n_pos = len(pos_u)

        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        params = self._init_params(n_users, n_items, train, gen)
        opt = torch.optim.Adam(params, lr=self.lr)

        steps_per_epoch = -(-n_pos // self.batch_size)
        total_steps = steps_per_epoch * self.epochs
        name = type(self).__name__
        logger.info(
            "%s: fitting %d users x %d items, %d positives, %d epochs x %d steps (batch %d)",
            name,
            n_users,
            n_items,
            n_pos,
            self.epochs,
            steps_per_epoch,
            self.batch_size,
        )
        self.history = []
        self.stopped_early = False
        start = time.perf_counter()
        last_log = start
        done_steps = 0
        for epoch in range(1, self.epochs + 1):
            perm = rng.permutation(n_pos)
            loss_sum, n_seen = 0.0, 0
            for b0 in range(0, n_pos, self.batch_size):
                idx = perm[b0 : b0 + self.batch_size]
                u = pos_u[idx]
                p = pos_i[idx]
                n = rng.integers(0, n_items, size=len(idx))
                hit = _contains(keys, u * n_items + n)
                if hit.any():
                    n[hit] = rng.integers(0, n_items, size=int(hit.sum()))
                loss = self._loss(torch.from_numpy(u), torch.from_numpy(p), torch.from_numpy(n))
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in torch
                opt.step()
                loss_sum += float(loss.detach()) * len(idx)
                n_seen += len(idx)
                done_steps += 1
                now = time.perf_counter()
                over_budget = self.time_budget_s is not None and now - start > self.time_budget_s
                if now - last_log >= self.log_every_s and not over_budget:
                    last_log = now
                    rate = done_steps / (now - start)
                    logger.info(
                        "%s: epoch %d/%d step %d/%d loss %.4f | %.1f steps/s, %.0f samples/s, ETA %s",
                        name,
                        epoch,
                        self.epochs,
                        done_steps - (epoch - 1) * steps_per_epoch,
                        steps_per_epoch,
                        loss_sum / n_seen,
                        rate,
                        rate * self.batch_size,
                        _fmt_s((total_steps - done_steps) / rate),
                    )
                if over_budget:
                    self.stopped_early = True
                    break
            self.history.append(loss_sum / max(n_seen, 1))
            now = time.perf_counter()
            rate = done_steps / max(now - start, 1e-9)
            logger.info(
                "%s: epoch %d/%d loss %.4f | %.1f steps/s, elapsed %s, ETA %s%s",
                name,
                epoch,
                self.epochs,
                self.history[-1],
                rate,
                _fmt_s(now - start),
                _fmt_s((total_steps - done_steps) / max(rate, 1e-9)),
                " (time budget exhausted, stopping)" if self.stopped_early else "",
            )
            last_log = now
            if self.stopped_early:
                break
        with torch.no_grad():
            user_emb, item_emb = self._final_embeddings()
        self._user_emb = user_emb.detach().numpy().astype(np.float32, copy=True)
        self._item_emb = item_emb.detach().numpy().astype(np.float32, copy=True)
        self.fit_seconds = time.perf_counter() - start
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """Dot-product scores (len(users), n_items), float32, for every item."""
        if self._user_emb is None or self._item_emb is None:
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        users = as_user_index(users, self.n_users)
        return np.ascontiguousarray(self._user_emb[users] @ self._item_emb.T, dtype=np.float32)

    @property
    def user_embeddings(self) -> np.ndarray:
        if self._user_emb is None:
            raise RuntimeError("not fitted")
        return self._user_emb

    @property
    def item_embeddings(self) -> np.ndarray:
        if self._item_emb is None:
            raise RuntimeError("not fitted")
        return self._item_emb

    # -- internals ------------------------------------------------------------------------
    def _loss(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        eu, ep, en, u0, p0, n0 = self._batch_embeddings(u, p, n)
        s_pos = (eu * ep).sum(-1)
        s_neg = (eu * en).sum(-1)
        bpr = F.softplus(s_neg - s_pos).mean()
        l2 = 0.5 * (u0.pow(2).sum() + p0.pow(2).sum() + n0.pow(2).sum()) / len(u)
        return bpr + self.reg * l2


def _contains(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Vectorised membership of ``query`` in the sorted array ``sorted_keys``."""
    pos = np.searchsorted(sorted_keys, query)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    found: NDArray[np.bool_] = sorted_keys[pos] == query
    return found
