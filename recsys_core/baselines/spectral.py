"""ChebyCF's filter response, and its factored form for a filter that can be served per request.

Reference: C. Kim, J. Sung, Y. Han, J. Lee, "Graph Spectral Filtering with Chebyshev Interpolation
for Recommendation", SIGIR 2025 (arXiv:2505.00552). On the normalized item-item graph
P = R~^T R~ (eigenvalues lam in [0, 1]) ChebyCF applies p(P), the degree-`order` Chebyshev
interpolant of a "plateau" low-pass response of flatness `flatness` in x = 1 - 2 lam, plus an
ideal pass over the top singular directions, between degree normalizations D^-beta ... D^beta.

Applying p(P) exactly costs `order` products with P per user, too slow to serve (~8 x 2 sparse
products over every pair on Gowalla per request). The factored form keeps it exact on the top-k
directions, which carry the filter's shape, and linear below them, where P's small eigenvalues are:

    p(P) ~ a0 I + c P + V_k diag(p(lam_k) - a0 - c lam_k) V_k^T

with a0 = p(0) and c the least-squares slope of p(lam) - a0 on [0, lam_k]. The identity term
scores only places the user has already been to, which are never recommended, so it is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
TAIL_GRID = 256  # points of [0, lam_k] the tail slope is fitted on


@dataclass(frozen=True)
class ChebyshevResponse:
    """ChebyCF's filter: order and flatness of the interpolated plateau, the degree power."""

    order: int = 8
    flatness: float = 1.5
    degree_power: float = 0.4

    def __post_init__(self) -> None:
        if self.order < 1 or not self.flatness > 0 or not 0 <= self.degree_power <= 1:
            raise ValueError(f"ChebyshevResponse needs order >= 1, flatness > 0, degree_power in [0, 1]; got {self}")

    def plateau(self, x: F64) -> F64:
        """The target response in x = 1 - 2 lam: 1 at x = -1 (smoothest), 0 at x = 1, `flatness`
        controlling how flat it stays at both ends."""
        x = np.asarray(x, np.float64)
        out: F64 = np.where(x < 0, 0.5 + 0.5 * np.abs(x) ** self.flatness, 0.5 - 0.5 * np.abs(x) ** self.flatness)
        return out

    @property
    def coefficients(self) -> F64:
        """Chebyshev coefficients of the interpolant. As in the authors' code, the targets are the
        plateau at the Chebyshev extrema cos(pi (K - j) / K), assigned to the K + 1 Chebyshev
        nodes in ascending order."""
        k = self.order
        extrema: F64 = np.round(np.cos((k - np.arange(k + 1)) / k * math.pi), 3).astype(np.float64)
        target = np.round(self.plateau(extrema), 3)
        nodes = np.cos((k + 1 + 0.5 - np.arange(1, k + 2)) / (k + 1) * math.pi)
        basis = np.polynomial.chebyshev.chebvander(nodes, k)  # (nodes, K + 1): T_m(node)
        coefficients: F64 = (2.0 / (k + 1)) * basis.T @ target
        coefficients[0] /= 2
        return coefficients

    def at(self, lam: F64) -> F64:
        """p(lam): the interpolant at eigenvalues of P."""
        out = np.polynomial.chebyshev.chebval(1.0 - 2.0 * np.asarray(lam, np.float64), self.coefficients)
        return np.asarray(out, np.float64)

    def factored(self, lam_top: F64) -> tuple[float, F64]:
        """(c, per-direction weights) of the factored form for top eigenvalues `lam_top`."""
        lam_top = np.asarray(lam_top, np.float64)
        a0 = float(self.at(np.zeros(1))[0])
        edge = float(lam_top.min()) if len(lam_top) else 1.0
        grid = np.linspace(0.0, edge, TAIL_GRID)
        c = float(grid @ (self.at(grid) - a0) / max(float(grid @ grid), 1e-12))
        return c, self.at(lam_top) - a0 - c * lam_top
