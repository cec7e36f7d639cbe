"""NCSNv2 noise design (Song & Ermon 2020, "Improved techniques for training score-based models").

* Technique 1: sigma_1 (the largest level) about the maximum pairwise distance of the data,
  so the prior N(0, sigma_1^2 I) covers every pair of training points.
* Technique 2: a geometric ladder whose ratio gamma = sigma_{i-1} / sigma_i satisfies
  Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = 0.5  (D = data dim),
  i.e. a constant chi^2 warm start between neighbouring levels (docs/theory.md, sec. 2b).
* Technique 4: ALD step size. Prop. 3: for one data point and x_0 ~ N(0, sigma_{i-1}^2 I), T steps
  of x <- x + alpha s + sqrt(2 alpha) z with alpha = eps sigma_i^2 / sigma_L^2 leave per-coordinate
  variance s_T^2 with
      s_T^2 / sigma_i^2 = q^{2T} (gamma^2 - 2 eps / (sigma_L^2 (1 - q^2))) + 2 eps / (sigma_L^2 (1 - q^2)),
  q = 1 - eps / sigma_L^2. The ratio is a convex combination of gamma^2 > 1 and 2/(2 - eps/sigma_L^2) > 1,
  so it never reaches 1: the technique picks the eps that minimises it.

numpy/scipy only; inputs may be tensors or arrays.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special


def max_pairwise_distance(data, *, chunk: int = 1024) -> float:
    """Technique 1: max ||x_i - x_j|| over a data sample ``(n, ...)`` (flattened per item).

    Computed exactly in float64 in chunks of ``chunk`` rows (memory O(chunk * n)).
    """
    x = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"data: need at least 2 items of shape (n, ...), got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    sq = (x**2).sum(1)
    best = 0.0
    for i in range(0, x.shape[0], chunk):
        block = x[i : i + chunk]
        d2 = sq[i : i + chunk, None] + sq[None, :] - 2 * block @ x.T
        best = max(best, float(d2.max()))
    return math.sqrt(max(best, 0.0))


def _technique2_gap(gamma: float, dim: int) -> float:
    c = math.sqrt(2 * dim) * (gamma - 1)
    return special.ndtr(c + 3 * gamma) - special.ndtr(c - 3 * gamma) - 0.5


def level_ratio(dim: int) -> float:
    """Technique 2: the ratio gamma > 1 solving Phi(sqrt(2D)(g-1)+3g) - Phi(sqrt(2D)(g-1)-3g) = 0.5.

    The left side falls from 0.997 at gamma = 1 towards 0 only when sqrt(2D) > 3, so very small
    dimensions (D <= 4) have no solution and raise ValueError.
    """
    if int(dim) < 1:
        raise ValueError(f"dim: the data dimension must be >= 1, got {dim}")
    if math.sqrt(2 * dim) <= 3:
        raise ValueError(f"dim: technique 2 has no solution for D = {dim} (needs sqrt(2D) > 3, D >= 5)")
    hi = 2.0
    while _technique2_gap(hi, dim) > 0:
        hi *= 2
    return optimize.brentq(_technique2_gap, 1.0, hi, args=(dim,), xtol=1e-14)


def num_noise_levels(sigma_max: float, sigma_min: float, dim: int) -> int:
    """Technique 2: the number L of geometric levels from sigma_max to sigma_min whose ratio is at
    most :func:`level_ratio` (dim): L = ceil(log(sigma_max / sigma_min) / log gamma) + 1."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    gamma = level_ratio(dim)
    return math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma) - 1e-9) + 1


def _ladder(sigmas) -> tuple[float, float]:
    s = np.sort(np.asarray(sigmas, dtype=np.float64).reshape(-1))[::-1]
    if s.size < 2 or not np.all(s > 0):
        raise ValueError("sigmas: need at least 2 positive noise levels")
    ratios = s[:-1] / s[1:]
    if not np.allclose(ratios, ratios[0], rtol=1e-4):
        raise ValueError("sigmas: Prop. 3 assumes a geometric ladder (constant ratio)")
    return float(ratios[0]), float(s[-1])


def ald_variance_ratio(step_lr, sigmas, n_steps_each: int):
    """NCSNv2 Prop. 3: s_T^2 / sigma_i^2 after ``n_steps_each`` ALD steps with ``step_lr`` = eps.

    ``sigmas`` is the geometric ladder (any order); ``step_lr`` may be an array. Needs
    0 < eps < sigma_L^2 (beyond that the Langevin step overshoots).
    """
    gamma, s_min = _ladder(sigmas)
    T = int(n_steps_each)
    if T < 1:
        raise ValueError(f"n_steps_each: need >= 1, got {n_steps_each}")
    eps = np.asarray(step_lr, dtype=np.float64)
    if np.any(eps <= 0) or np.any(eps >= s_min**2):
        raise ValueError(f"step_lr: need 0 < step_lr < sigma_min^2 = {s_min**2:g}")
    q = 1.0 - eps / s_min**2
    stationary = 2 * eps / (s_min**2 * (1 - q**2))  # = 2 / (2 - eps / sigma_L^2)
    return q ** (2 * T) * (gamma**2 - stationary) + stationary


def ald_step_size(sigmas, n_steps_each: int) -> float:
    """Technique 4: the step_lr eps minimising the Prop. 3 ratio (always > 1) for the ladder."""
    _, s_min = _ladder(sigmas)

    def objective(log_eps: float) -> float:
        return float(ald_variance_ratio(math.exp(log_eps), sigmas, n_steps_each))

    # the ratio is unimodal in log eps on (0, sigma_L^2): bracket on a grid, then refine
    grid = np.linspace(math.log(s_min**2) - 30, math.log(s_min**2) - 1e-6, 400)
    vals = [objective(v) for v in grid]
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return math.exp(res.x)
