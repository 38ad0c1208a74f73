"""ChebyCF's response (`baselines.spectral`) and the filter's factored form against the exact one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.baselines.item_filter import ItemItemFilter
from recsys_core.baselines.spectral import ChebyshevResponse
from recsys_core.ranking.blend import PlaceBlend
from recsys_core.ranking.parts import FilterPart


def test_interpolant_takes_the_plateau_values_at_the_chebyshev_nodes():
    response = ChebyshevResponse(order=8, flatness=1.5)
    k = response.order
    nodes = np.cos((k + 1.5 - np.arange(1, k + 2)) / (k + 1) * np.pi)
    extrema = np.round(np.cos((k - np.arange(k + 1)) / k * np.pi), 3)
    values = np.polynomial.chebyshev.chebval(nodes, response.coefficients)
    np.testing.assert_allclose(values, np.round(response.plateau(extrema), 3), atol=1e-9)
    # a low-pass: the smoothest signals (lam = 1) pass, the roughest (lam = 0) barely do
    assert response.at(np.array([1.0]))[0] > 0.9 and abs(response.at(np.array([0.0]))[0]) < 0.1
    # flatness changes the shape
    assert not np.allclose(ChebyshevResponse(flatness=3.0).coefficients, response.coefficients)


def _interactions(seed: int = 0, n_users: int = 24, n_items: int = 40) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.2).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # nobody without a pair
    dense[-1] = dense[0]  # a repeated user: rank <= n_users - 1, so k = n_users - 1 spans it all
    return sp.csr_matrix(dense)


def _exact_chebycf(train: sp.csr_matrix, response: ChebyshevResponse, alpha: float, k: int) -> np.ndarray:
    """The authors' definition, densely: D^b [p(I - 2 P) + alpha V_k^T V_k] D^-b r (Chebyshev
    recursion on the matrix), minus the identity term a0 r that only scores seen places."""
    R = train.toarray().astype(np.float64)
    du, di = R.sum(1), R.sum(0)
    Rn = R / np.sqrt(du)[:, None] / np.sqrt(np.maximum(di, 1e-300))[None, :]
    laplacian = np.eye(R.shape[1]) - 2.0 * Rn.T @ Rn
    terms = [np.eye(R.shape[1]), laplacian]
    for _ in range(2, response.order + 1):
        terms.append(2.0 * laplacian @ terms[-1] - terms[-2])
    h = sum(c * t for c, t in zip(response.coefficients, terms, strict=False))
    vt = np.linalg.svd(Rn, full_matrices=False)[2][:k]
    h = h + alpha * vt.T @ vt
    b = np.where(di > 0, np.maximum(di, 1e-300) ** response.degree_power, 0.0)
    signal = R / np.where(b > 0, b, 1.0)[None, :]
    a0 = float(response.at(np.zeros(1))[0])
    return (signal @ h) * b[None, :] - a0 * R


def test_factored_form_is_exact_where_the_top_directions_span_the_graph():
    train = _interactions()
    response = ChebyshevResponse(order=8, flatness=1.5, degree_power=0.4)
    k = train.shape[0] - 1
    fitted = ItemItemFilter(alpha=0.2, k=k, response=response).fit(train)
    users = np.arange(train.shape[0])
    np.testing.assert_allclose(fitted.score(users), _exact_chebycf(train, response, 0.2, k), rtol=1e-4, atol=1e-4)
    # fewer directions: an approximation, but not GF-CF
    gfcf = ItemItemFilter(alpha=0.2, k=6).fit(train).score(users)
    assert not np.allclose(fitted.truncated(0.2, 6).score(users), gfcf, atol=1e-3)


def test_sweep_terms_add_up_and_the_served_part_scores_the_same():
    """What the validation sweep adds (alpha x the unweighted ideal pass) is what the filter with
    that alpha scores; and the servable part (`FilterPart`) scores it, saved and loaded."""
    train = _interactions(seed=3)
    fitted = ItemItemFilter(alpha=1.0, k=10, response=ChebyshevResponse()).fit(train)
    users = np.arange(train.shape[0])
    base = fitted.truncated(0.0, 6)
    summed = base.score(users) + 0.3 * base.low_pass_scores(users)
    np.testing.assert_allclose(summed, fitted.truncated(0.3, 6).score(users), rtol=1e-4, atol=1e-5)
    part = FilterPart.from_filter(fitted.truncated(0.3, 6))
    assert part.spread is not None
    np.testing.assert_allclose(part.dense(users), fitted.truncated(0.3, 6).score(users), rtol=1e-4, atol=1e-5)
    for row in (0, 5):
        cols, values = part.linear_row(row)
        linear = part.dense(np.array([row])) - part.alpha * (train[row] @ part.low_left) @ part.low_right
        np.testing.assert_allclose(values, linear[0, cols], rtol=1e-4, atol=1e-5)


def test_a_saved_chebyshev_blend_loads_with_its_first_factor(tmp_path):
    train = _interactions(seed=4)
    part = FilterPart.from_filter(ItemItemFilter(alpha=0.2, k=8, response=ChebyshevResponse()).fit(train))
    PlaceBlend({"graph_filter": [part]}, {"graph_filter": 1.0}).save(tmp_path)
    loaded = PlaceBlend.load(tmp_path).groups["graph_filter"][0]
    assert isinstance(loaded, FilterPart) and loaded.spread is not None
    users = np.arange(train.shape[0])
    np.testing.assert_allclose(loaded.dense(users), part.dense(users), rtol=1e-6)


@pytest.mark.parametrize("bad", [{"order": 0}, {"flatness": 0.0}, {"degree_power": 1.5}])
def test_bad_responses_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="ChebyshevResponse"):
        ChebyshevResponse(**bad)
