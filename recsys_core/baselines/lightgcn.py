"""LightGCN (He et al., SIGIR 2020) on the user-item bipartite graph, with PyG's LGConv."""

from __future__ import annotations

import logging
import warnings
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.nn import LGConv

from recsys_core.baselines._common import BPRModel

logger = logging.getLogger(__name__)


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a *symmetric* sparse A; the backward pass reuses A (= A^T).

    torch's generic sparse-CSR backward transposes A on every call, which is ~8x slower
    than the product itself on CPU.
    """

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        out: torch.Tensor = torch.sparse.mm(adj, x)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, torch.sparse.mm(ctx.adj, grad_out)


class _SymLGConv(LGConv):  # type: ignore[misc, unused-ignore]  # torch_geometric ships no type information
    """LGConv whose sparse-adjacency path uses ``_SymmetricSpMM`` (the graph here is symmetric)."""

    def message_and_aggregate(self, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor
        out = _SymmetricSpMM.apply(adj_t, x)  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in torch
        return out


def normalized_bipartite_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """D^{-1/2} A D^{-1/2} of A = [[0, R], [R^T, 0]] (users 0..U-1, items U..U+I-1), binary R."""
    n_users, n_items = train.shape
    r = train.copy()
    r.data[:] = 1.0
    # scipy-stubs type bmat(format="csr") as a bare spmatrix; it is a csr_matrix.
    adj = cast("sp.csr_matrix[np.float32]", sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32))
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg, dtype=np.float32)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv_sqrt)
    out = (d @ adj @ d).tocsr().astype(np.float32)
    out.sort_indices()
    return out


class LightGCN(BPRModel):
    """LightGCN: E^(k+1) = D^{-1/2} A D^{-1/2} E^(k), final = mean(E^(0..L)), score = <e_u, e_i>.

    Every training step propagates the full graph (``layers`` LGConv calls on a torch sparse
    CSR adjacency; the symmetric normalisation is precomputed, so ``LGConv(normalize=False)``),
    then takes the BPR loss on the batch with L2 on the batch's ego (layer-0) embeddings.
    Final propagated embeddings are cached after ``fit`` for scoring. Edges are binary
    (interaction weights ignored). See ``BPRModel`` for the sampling details.

    Cost: every step does ``2 * layers`` sparse products over the 2*nnz-edge graph, so an
    epoch at 1M interactions (~125 steps of 8192) takes roughly 30 s on 2 idle CPU cores
    (several times more on a loaded machine). Defaults (4 epochs) target ~10k users x 10k
    items x 1M interactions; pass ``time_budget_s`` to cap the run.
    """

    def __init__(
        self,
        dim: int = 64,
        layers: int = 3,
        epochs: int = 4,
        lr: float = 1e-2,
        reg: float = 1e-4,
        batch_size: int = 8192,
        seed: int = 0,
        time_budget_s: float | None = None,
        log_every_s: float = 10.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(dim, epochs, lr, reg, batch_size, seed, time_budget_s, log_every_s, init_std)
        if layers < 0:
            raise ValueError("layers must be >= 0")
        self.layers = int(layers)

    def _init_params(
        self, n_users: int, n_items: int, train: sp.csr_matrix, generator: torch.Generator
    ) -> list[torch.nn.Parameter]:
        norm = normalized_bipartite_adjacency(train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            self._adj = torch.sparse_csr_tensor(
                torch.from_numpy(norm.indptr.astype(np.int64)),
                torch.from_numpy(norm.indices.astype(np.int64)),
                torch.from_numpy(norm.data.astype(np.float32)),
                size=norm.shape,
                check_invariants=False,
            )
        self._conv = _SymLGConv(normalize=False)
        self._E = torch.nn.Parameter(torch.randn(n_users + n_items, self.dim, generator=generator) * self.init_std)
        return [self._E]

    @property
    def ego_embeddings(self) -> np.ndarray:
        """Layer-0 embeddings (users then items), shape (n_users + n_items, dim)."""
        if self._user_emb is None:
            raise RuntimeError("not fitted")
        return self._E.detach().numpy().copy()

    def _propagate(self) -> torch.Tensor:
        h = self._E
        acc = h
        for _ in range(self.layers):
            h = self._conv(h, self._adj)
            acc = acc + h
        return acc / (self.layers + 1)

    def _batch_embeddings(
        self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self._propagate()
        U = self.n_users
        return out[u], out[U + p], out[U + n], self._E[u], self._E[U + p], self._E[U + n]

    def _final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._propagate()
        return out[: self.n_users], out[self.n_users :]
