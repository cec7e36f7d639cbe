"""Point-cloud metrics against closed forms."""

import math

import pytest
import torch

from sgm_lightning.analytic import GaussianMixture
from sgm_lightning.metrics import (
    gaussian_kl,
    mmd2_rbf,
    mode_statistics,
    mode_weight_error,
    mode_weights,
    sliced_wasserstein2,
)


def randn(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_mode_weights_and_statistics():
    gm = GaussianMixture([0.6, 0.3, 0.1], [[6.0, 0.0], [-6.0, 0.0], [0.0, 8.0]], [1.0, 0.5, 1.5])
    n = 20_000
    x = gm.sample(n, torch.Generator().manual_seed(0))
    w = mode_weights(x, gm)
    assert w.sum().item() == pytest.approx(1.0)
    assert mode_weight_error(x, gm) < 4 * math.sqrt(0.25 / n)
    weights, means, variances = mode_statistics(x, gm)
    torch.testing.assert_close(weights, w)
    assert (means - gm.means).abs().max() < 0.05
    assert (variances / gm.stds[:, None] ** 2 - 1).abs().max() < 0.05
    # a point cloud sitting entirely in mode 1 has error max(0.6, 0.7, 0.1) = 0.7
    assert mode_weight_error(torch.tensor([[-6.0, 0.0]] * 10), gm) == pytest.approx(0.7)


def test_sliced_w2_closed_forms():
    """Shift m: SW2^2 = E(theta.m)^2 = |m|^2/d. Scale 1 -> 2: every 1-D W2 is 1."""
    x, y = randn(2000, 4, 1), randn(2000, 4, 2)
    assert sliced_wasserstein2(x, x) == 0.0
    assert sliced_wasserstein2(x, y) < 0.06
    shift = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert sliced_wasserstein2(x, y + shift, n_projections=1000) == pytest.approx(1.0, abs=0.04)
    assert sliced_wasserstein2(x, 2 * y, n_projections=500) == pytest.approx(1.0, abs=0.03)
    assert sliced_wasserstein2(x[:800], 2 * y, n_projections=500) == pytest.approx(1.0, abs=0.05)
    # seeded: the same seed gives the same number
    assert sliced_wasserstein2(x, y, seed=7) == sliced_wasserstein2(x, y, seed=7)


def test_mmd2_rbf_closed_form():
    """1-D N(0,1) vs N(1,1), h = 1: MMD^2 = 2 h/sqrt(h^2+2) (1 - exp(-1/(2 (h^2+2))))."""
    x, y = randn(2000, 1, 3), randn(2000, 1, 4) + 1.0
    exact = 2 / math.sqrt(3) * (1 - math.exp(-1 / 6))
    assert mmd2_rbf(x, y, bandwidth=1.0) == pytest.approx(exact, abs=0.01)
    assert abs(mmd2_rbf(x, randn(2000, 1, 5), bandwidth=1.0)) < 0.004


def test_gaussian_kl_exact():
    g = torch.Generator().manual_seed(6)
    d = 4
    A, B = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    S0, S1 = A @ A.T + 0.5 * torch.eye(d), B @ B.T + 0.5 * torch.eye(d)
    m0, m1 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m0, S0), torch.distributions.MultivariateNormal(m1, S1)
    )
    assert gaussian_kl(m0, S0, m1, S1) == pytest.approx(ref.item(), rel=1e-10)
    assert gaussian_kl(m0, S0, m0, S0) == pytest.approx(0.0, abs=1e-12)
    # diagonal and scalar forms: KL(N(0, 2 I_3) || N(0, I_3)) = 3 (2 - 1 - ln 2) / 2
    assert gaussian_kl(torch.zeros(3), 2.0, torch.zeros(3), torch.ones(3)) == pytest.approx(1.5 * (1 - math.log(2)))
    with pytest.raises(ValueError, match="cov1"):
        gaussian_kl(torch.zeros(3), 1.0, torch.zeros(3), torch.ones(2))
