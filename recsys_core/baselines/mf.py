"""Matrix factorisation trained with the BPR pairwise loss (Rendle et al., UAI 2009)."""

from __future__ import annotations

import logging

import scipy.sparse as sp
import torch

from recsys_core.baselines._common import BPRModel

logger = logging.getLogger(__name__)


class MatrixFactorizationBPR(BPRModel):
    """BPR-MF: score(u, i) = <p_u, q_i>, trained with Adam on uniformly sampled negatives.

    See ``BPRModel`` for the sampling / loss details. Defaults are sized for roughly
    10k users x 10k items x 1M interactions on 2 CPU cores (~2 s per epoch there when the
    machine is idle, so the default 10 epochs take well under a minute).
    """

    def __init__(
        self,
        dim: int = 64,
        epochs: int = 10,
        lr: float = 5e-3,
        reg: float = 1e-4,
        batch_size: int = 8192,
        seed: int = 0,
        time_budget_s: float | None = None,
        log_every_s: float = 10.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(dim, epochs, lr, reg, batch_size, seed, time_budget_s, log_every_s, init_std)

    def _init_params(
        self, n_users: int, n_items: int, train: sp.csr_matrix, generator: torch.Generator
    ) -> list[torch.nn.Parameter]:
        self._P = torch.nn.Parameter(torch.randn(n_users, self.dim, generator=generator) * self.init_std)
        self._Q = torch.nn.Parameter(torch.randn(n_items, self.dim, generator=generator) * self.init_std)
        return [self._P, self._Q]

    def _batch_embeddings(
        self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        eu, ep, en = self._P[u], self._Q[p], self._Q[n]
        return eu, ep, en, eu, ep, en

    def _final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._P, self._Q
