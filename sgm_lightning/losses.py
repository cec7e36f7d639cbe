"""Denoising score matching (Vincent 2011) on the forward processes of :mod:`sgm_lightning.sde`.

For x_t = s(t) x_0 + std(t) z the conditional score is grad log p(x_t | x_0) = -z / std(t), so
DSM minimises E || s_theta(x_t, t) + z / std(t) ||^2, whose minimiser is the true score of p_t
(the Tweedie identity). Weightings (Song et al. 2021, eq. 7 and Song et al. 2021b):

* ``sigma2``:     lambda(t) = std(t)^2, i.e. || std * s_theta + z ||^2 (score_sde's default);
* ``likelihood``: lambda(t) = g(t)^2, which makes the loss an upper bound on the NLL;
* ``edm``:        EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on
  || D - x_0 ||^2 (Karras et al. 2022, Table 1), i.e. (sigma^2 + sigma_data^2) / sigma_data^2
  times the ``sigma2`` residual, with sigma = std / s the EDM noise level.

Noise levels (``sample_times``, all through the process's sigma(t) and its inverse):
``uniform_t`` t ~ U(eps, T) (score_sde), ``log_uniform`` ln sigma ~ U(ln sigma(eps), ln sigma(T))
and ``lognormal`` ln sigma ~ N(P_mean, P_std^2) (EDM).

Reduction over the data dimensions: ``mean``, or ``sum`` which is 0.5 * sum (score_sde's
``reduce_mean=False``). Every function returns the per-sample losses ``(B,)``; callers average.

Discrete levels (NCSN / DDPM): a level i is uniform in {0, ..., N-1}; x_i = a_i x_0 + std_i z
with (a_i, std_i) = (1, sigma_i) on VE's geometric ladder or (sqrt(abar_i), sqrt(1 - abar_i))
on DDPM's chain; the weight is std_i^anneal_power (NCSN: 0.5 || s + z/sigma ||^2 sigma^2).
"""

from __future__ import annotations

import math

import torch

from .rng import GeneratorLike, rand, randn
from .sde import SDE, ScoreFn, bcast


def _reduce(sq: torch.Tensor, reduce: str) -> torch.Tensor:
    """Squared residuals ``(B, ...)`` -> ``(B,)``: mean, or 0.5 * sum, over the data dimensions."""
    flat = sq.flatten(1)
    if reduce == "mean":
        return flat.mean(1)
    if reduce == "sum":
        return 0.5 * flat.sum(1)
    raise ValueError(f"reduce: choose mean or sum, got {reduce!r}")


SIGMA_DISTS = ("uniform_t", "log_uniform", "lognormal")


def sample_times(
    batch: int, sde: SDE, eps: float = 1e-5, generator: GeneratorLike = None, *, dist: str = "uniform_t",
    P_mean: float = -1.2, P_std: float = 1.2, device=None, dtype=torch.float32,
) -> torch.Tensor:
    """Training times ``(B,)`` whose noise levels follow ``dist`` (see module docstring).

    ``lognormal`` is not truncated: levels above sigma(T) give t > T, which every process
    of :mod:`sgm_lightning.sde` extends to (EDM trains beyond its sampling range too).
    """
    u = rand((batch,), generator, device=device, dtype=dtype)
    if dist == "uniform_t":
        return eps + (sde.T - eps) * u
    if dist == "log_uniform":
        lo, hi = (math.log(s) for s in sde.sigma_range(eps))
        return sde.t_from_sigma(torch.exp(lo + (hi - lo) * u))
    if dist == "lognormal":
        return sde.t_from_sigma(torch.exp(P_mean + P_std * randn((batch,), generator, device=device, dtype=dtype)))
    raise ValueError(f"sigma_dist: choose one of {list(SIGMA_DISTS)}, got {dist!r}")


def dsm_loss(
    score_fn: ScoreFn,
    sde: SDE,
    x0: torch.Tensor,
    *,
    t: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    eps: float = 1e-5,
    weighting: str = "sigma2",
    reduce: str = "mean",
    generator: GeneratorLike = None,
    sigma_dist: str = "uniform_t",
    P_mean: float = -1.2,
    P_std: float = 1.2,
    sigma_data: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous-time DSM. Returns ``(losses (B,), t (B,))``.

    ``t`` and ``z`` may be given (fixed validation noise); otherwise t is drawn by
    :func:`sample_times` (``sigma_dist``, ``P_mean``, ``P_std``) and z ~ N(0, I), both from
    ``generator``. ``sigma_data`` enters the ``edm`` weighting only.
    """
    b = x0.shape[0]
    if t is None:
        t = sample_times(b, sde, eps, generator, dist=sigma_dist, P_mean=P_mean, P_std=P_std,
                         device=x0.device, dtype=x0.dtype)
    if z is None:
        z = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    scale, std = sde.marginal_coeffs(t)
    score = score_fn(sde.perturb(x0, t, z), t)
    if weighting == "sigma2":
        return _reduce(torch.square(score * bcast(std, x0) + z), reduce), t
    if weighting == "likelihood":
        g2 = sde.sde(torch.zeros_like(x0), t)[1] ** 2
        return _reduce(torch.square(score + z / bcast(std, x0)), reduce) * g2, t
    if weighting == "edm":
        sigma = std / scale
        return _reduce(torch.square(score * bcast(std, x0) + z), reduce) * (1 + (sigma / sigma_data) ** 2), t
    raise ValueError(f"weighting: choose sigma2, likelihood or edm, got {weighting!r}")


def discrete_coeffs(sde: SDE, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a_i, std_i)`` of level i: VE's ``discrete_sigmas`` or VP's ``alphas_cumprod``
    (:meth:`sgm_lightning.sde.SDE.discrete_coeffs`)."""
    return sde.discrete_coeffs(i)


def level_times(sde: SDE, i: torch.Tensor) -> torch.Tensor:
    """The time of level i, t_i = i T / (N - 1), so ``noise_labels(sde, t_i, continuous=False)``
    gives the network the same level (VE: the descending index N-1-i; VP: i)."""
    return i.to(torch.float64) * sde.T / (sde.N - 1)


def discrete_dsm_loss(
    score_fn: ScoreFn,
    sde: SDE,
    x0: torch.Tensor,
    *,
    levels: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    anneal_power: float = 2.0,
    reduce: str = "sum",
    generator: GeneratorLike = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NCSN / DDPM loss on discrete levels. ``score_fn`` is the *discrete* score function
    (``score_fn_from_net(net, sde, continuous=False)``). Returns ``(losses (B,), t (B,))``."""
    b = x0.shape[0]
    if levels is None:
        u = rand((b,), generator, device=x0.device, dtype=torch.float64)
        levels = (u * sde.N).long().clamp_(max=sde.N - 1)
    if z is None:
        z = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    a, std = (c.to(x0.dtype) for c in discrete_coeffs(sde, levels))
    t = level_times(sde, levels).to(x0.dtype)
    xt = bcast(a, x0) * x0 + bcast(std, x0) * z
    score = score_fn(xt, t)
    # 0.5 || s + z / std ||^2 std^p  (NCSN, Song & Ermon 2019 eq. 5-6 with lambda = sigma^p)
    sq = torch.square(score + z / bcast(std, x0))
    return _reduce(sq, reduce) * std**anneal_power, t
