"""Point-cloud metrics for samplers run on known targets (docs/theory.md, sec. 5 "Metrics").

* :func:`mode_weights`, :func:`mode_weight_error`, :func:`mode_statistics`: compare per-mode
  mass, mean and variance with a :class:`~sgm_lightning.analytic.GaussianMixture` (via ``assign``).
* :func:`sliced_wasserstein2`: SW2 over many seeded random projections (exact 1-D W2 per direction).
* :func:`mmd2_rbf`: unbiased RBF-kernel MMD^2 (Gretton et al. 2012).
* :func:`gaussian_kl`: exact KL(N0 || N1), full or diagonal covariances.

Inputs are ``(n, d)`` tensors (or ``(n, ...)``, flattened); results are Python floats or
float64 tensors. Image metrics (FID/KID/IS) are in :mod:`sgm_lightning.metrics.images`.
"""

from __future__ import annotations

import math

import torch

from ..analytic import GaussianMixture


def _flat64(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: expected a point cloud of shape (n, d) with n >= 2, got {tuple(x.shape)}")
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def mode_weights(x: torch.Tensor, mixture: GaussianMixture) -> torch.Tensor:
    """Fraction of the samples ``x`` ``(n, d)`` assigned to each component -> ``(K,)``."""
    labels = mixture.assign(_flat64(x, "x"))
    return torch.bincount(labels, minlength=mixture.n_components).double() / labels.numel()


def mode_weight_error(x: torch.Tensor, mixture: GaussianMixture) -> float:
    """max_k |w_hat_k - w_k|: the worst mode-weight error (binomial SE ~ sqrt(w(1-w)/n))."""
    return float((mode_weights(x, mixture) - mixture.weights).abs().max())


def mode_statistics(x: torch.Tensor, mixture: GaussianMixture):
    """Per-mode ``(weights (K,), means (K, d), variances (K, d))`` of the samples assigned to
    each component (NaN rows for empty modes)."""
    x = _flat64(x, "x")
    labels = mixture.assign(x)
    K, d = mixture.n_components, x.shape[1]
    means = torch.full((K, d), float("nan"), dtype=torch.float64)
    variances = torch.full((K, d), float("nan"), dtype=torch.float64)
    for k in range(K):
        xk = x[labels == k]
        if xk.shape[0] > 1:
            means[k], variances[k] = xk.mean(0), xk.var(0)
    weights = torch.bincount(labels, minlength=K).double() / x.shape[0]
    return weights, means, variances


def _quantiles(sorted_x: torch.Tensor, n: int) -> torch.Tensor:
    """The (i + 1/2)/n quantiles, i < n, of each column of ``sorted_x`` (linear interpolation)."""
    m = sorted_x.shape[0]
    pos = ((torch.arange(n, dtype=torch.float64) + 0.5) * m / n - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    frac = (pos - lo)[:, None]
    return sorted_x[lo] * (1 - frac) + sorted_x[hi] * frac


def sliced_wasserstein2(
    x: torch.Tensor, y: torch.Tensor, *, n_projections: int = 256, seed: int = 0, n_quantiles: int | None = None
) -> float:
    """Sliced Wasserstein-2: sqrt(E_theta W2^2(theta#x, theta#y)) over ``n_projections`` random
    unit directions drawn from ``seed``. Each 1-D W2 compares sorted projections; with unequal
    sample sizes both are evaluated at ``n_quantiles`` (default min(n_x, n_y)) mid-point quantiles."""
    x, y = _flat64(x, "x"), _flat64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x, y: point dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    if int(n_projections) < 1:
        raise ValueError(f"n_projections: need >= 1, got {n_projections}")
    g = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(x.shape[1], int(n_projections), generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(0).values, (y @ theta).sort(0).values
    if px.shape[0] != py.shape[0] or n_quantiles is not None:
        n = int(n_quantiles or min(px.shape[0], py.shape[0]))
        px, py = _quantiles(px, n), _quantiles(py, n)
    return math.sqrt(float(((px - py) ** 2).mean()))


def mmd2_rbf(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with k(a, b) = exp(-||a - b||^2 / (2 h^2)); default h: the median pairwise
    distance of the pooled sample (median heuristic). Can be slightly negative when p = q."""
    x, y = _flat64(x, "x"), _flat64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x, y: point dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    if bandwidth is None:
        pooled = torch.cat([x, y])
        bandwidth = float(torch.cdist(pooled, pooled).median())
    if not bandwidth > 0:
        raise ValueError(f"bandwidth: need > 0, got {bandwidth}")

    def k(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * bandwidth**2))

    n, m = x.shape[0], y.shape[0]
    kxx = (k(x, x).sum() - n) / (n * (n - 1))
    kyy = (k(y, y).sum() - m) / (m * (m - 1))
    return float(kxx + kyy - 2 * k(x, y).mean())


def _as_cov(c: torch.Tensor, d: int, name: str) -> torch.Tensor:
    c = torch.as_tensor(c, dtype=torch.float64)
    if c.ndim == 0:
        c = c * torch.ones(d, dtype=torch.float64)
    if c.ndim == 1:
        if c.shape[0] != d or not torch.all(c > 0):
            raise ValueError(f"{name}: a diagonal covariance needs {d} positive entries")
        return torch.diag(c)
    if c.shape != (d, d):
        raise ValueError(f"{name}: expected a ({d}, {d}) matrix, a ({d},) diagonal or a scalar")
    return c


def gaussian_kl(mean0, cov0, mean1, cov1) -> float:
    """KL(N(mean0, cov0) || N(mean1, cov1)) in nats. Each covariance may be ``(d, d)``, a
    diagonal ``(d,)`` or a scalar variance:
    KL = [tr(S1^{-1} S0) + (m1 - m0)^T S1^{-1} (m1 - m0) - d + ln det S1 - ln det S0] / 2."""
    m0 = torch.as_tensor(mean0, dtype=torch.float64).reshape(-1)
    m1 = torch.as_tensor(mean1, dtype=torch.float64).reshape(-1)
    if m0.shape != m1.shape:
        raise ValueError(f"mean0, mean1: shapes differ ({tuple(m0.shape)} vs {tuple(m1.shape)})")
    d = m0.shape[0]
    S0, S1 = _as_cov(cov0, d, "cov0"), _as_cov(cov1, d, "cov1")
    L1 = torch.linalg.cholesky(S1)
    L0 = torch.linalg.cholesky(S0)
    A = torch.linalg.solve_triangular(L1, L0, upper=False)  # L1^{-1} L0
    delta = torch.linalg.solve_triangular(L1, (m1 - m0)[:, None], upper=False)
    logdet = 2 * (torch.log(torch.diagonal(L1)).sum() - torch.log(torch.diagonal(L0)).sum())
    return float(0.5 * ((A**2).sum() + (delta**2).sum() - d + logdet))
