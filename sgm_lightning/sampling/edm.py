"""EDM samplers (Karras et al. 2022, Alg. 1 and 2) driven by any process's score_fn.

EDM works on the scaled-out state x~ = x / s(t), which is data plus noise of level
sigma = std(t) / s(t) (``sde.sigma``). Its denoiser follows from the score by Tweedie:

    D(x~; sigma) = x~ + sigma^2 * s(t) * score(s(t) x~, t),   t = sde.t_from_sigma(sigma)

(VE: s = 1, D = x + sigma^2 score). The ODE is dx~/dsigma = (x~ - D) / sigma. The schedule is
sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < N, then sigma_N = 0.
"""

from __future__ import annotations

import math

import torch

from ..rng import GeneratorLike
from ..sde import SDE, ScoreFn
from .base import Callback, SampleResult, check_int, check_number, noise, report, start, without_autograd


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's rho-schedule: ``(steps + 1,)`` float64 levels from sigma_max to sigma_min, then 0."""
    steps = check_int("steps", steps, 1)
    rho = check_number("rho", rho, positive=True)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    s = (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


class Denoiser:
    """D(x~; sigma) from a score_fn; ``level(sigma)`` precomputes (t vector, s(t), sigma)."""

    def __init__(self, sde: SDE, score, batch: int, like: torch.Tensor):
        self.sde, self.score, self.batch, self.like = sde, score, batch, like

    def level(self, sigma: float):
        """``(t (B,), s(t) as a float, sigma)`` for the noise level ``sigma`` > 0."""
        t = self.sde.t_from_sigma(torch.tensor([sigma], dtype=torch.float64))
        scale = self.sde.marginal_coeffs(t)[0].item()
        t = t.to(device=self.like.device, dtype=self.like.dtype).expand(self.batch)
        return t, scale, sigma

    def __call__(self, x_tilde: torch.Tensor, level) -> torch.Tensor:
        t, a, sigma = level
        s = self.score(x_tilde if a == 1.0 else a * x_tilde, t)
        return torch.add(x_tilde, s, alpha=sigma**2 * a)


def default_sigma_range(sde: SDE, sigma_min, sigma_max) -> tuple[float, float]:
    lo, hi = sde.sigma_range()
    return (lo if sigma_min is None else float(sigma_min)), (hi if sigma_max is None else float(sigma_max))


def start_scaled(sde, score_fn, shape, x_init, generator, device, dtype, sigma_max):
    """The starting x~ at sigma_max: sigma_max * N(0, I), or ``x_init`` (an x at t(sigma_max)) / s."""
    x, gen, score = start(sde, score_fn, shape, x_init, generator, device, dtype)
    if x_init is None:
        x = sigma_max * noise(x, gen)  # fresh noise: the prior sample's scale is irrelevant here
    else:
        t = sde.t_from_sigma(torch.tensor([sigma_max], dtype=torch.float64))
        x = x / sde.marginal_coeffs(t)[0].item()
    return x, gen, score


@without_autograd
def edm_sample(sde: SDE, score_fn: ScoreFn, shape=None, *, steps: int = 18, sigma_min: float | None = None,
               sigma_max: float | None = None, rho: float = 7.0, S_churn: float = 0.0, S_min: float = 0.0,
               S_max: float = float("inf"), S_noise: float = 1.0, x_init: torch.Tensor | None = None,
               generator: GeneratorLike = None, callback: Callback = None, device=None,
               dtype=torch.float32) -> SampleResult:
    """EDM Alg. 2: Heun steps on the rho=7 schedule, with churn gamma = min(S_churn/N, sqrt2 - 1)
    on levels in [S_min, S_max] (S_churn = 0: Alg. 1, deterministic). NFE = 2 steps - 1.
    Defaults for sigma_min/max: ``sde.sigma_range()``. ``callback(step)`` gets x in the
    process's own scaling at time t (a clean state, t = sigma = 0, after the last step)."""
    for name, v in (("S_churn", S_churn), ("S_min", S_min), ("S_noise", S_noise)):
        check_number(name, v)
    if not S_max >= S_min:
        raise ValueError(f"S_max: need S_max >= S_min, got {S_max} < {S_min}")
    sigma_min, sigma_max = default_sigma_range(sde, sigma_min, sigma_max)
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho).tolist()
    x, gen, score = start_scaled(sde, score_fn, shape, x_init, generator, device, dtype, sigma_max)
    D = Denoiser(sde, score, x.shape[0], x)
    gamma0 = min(S_churn / steps, math.sqrt(2) - 1)
    gammas = [gamma0 if S_min <= s <= S_max else 0.0 for s in sigmas[:-1]]
    hats = [D.level(s * (1 + g)) for s, g in zip(sigmas[:-1], gammas)]  # levels: no per-step setup
    nexts = [D.level(s) if s > 0 else None for s in sigmas[1:]]
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        sigma_hat = hats[i][2]
        if gammas[i] > 0:  # churn: raise the noise level to sigma_hat with fresh noise
            x = torch.add(x, noise(x, gen), alpha=math.sqrt(sigma_hat**2 - sigma**2) * S_noise)
        h = sigma_next - sigma_hat
        d = (x - D(x, hats[i])).mul_(1 / sigma_hat)  # dx/dsigma = (x - D) / sigma
        x_next = torch.add(x, d, alpha=h)  # Euler step
        if sigma_next > 0:  # Heun's 2nd-order correction
            d_next = (x_next - D(x_next, nexts[i])).mul_(1 / sigma_next)
            x_next = torch.add(x, d.add_(d_next), alpha=0.5 * h)
        x = x_next
        if callback is not None:
            lvl = nexts[i]
            if lvl is None:
                report(callback, i, x)
            else:
                report(callback, i, lvl[1] * x, lvl[0], sde=sde, score_fn=score)
    return SampleResult(x, score.nfe)


@without_autograd
def edm_heun(sde: SDE, score_fn: ScoreFn, shape=None, *, steps: int = 18, sigma_min: float | None = None,
             sigma_max: float | None = None, rho: float = 7.0, x_init: torch.Tensor | None = None,
             generator: GeneratorLike = None, callback: Callback = None, device=None,
             dtype=torch.float32) -> SampleResult:
    """EDM's deterministic Heun sampler (Alg. 1): 18 steps = 35 NFE by default (no churn: use
    :func:`edm_stochastic` for that)."""
    run = edm_sample.__wrapped__  # autograd is already off (or on, with grad=True) here
    return run(sde, score_fn, shape, steps=steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
               x_init=x_init, generator=generator, callback=callback, device=device, dtype=dtype)


@without_autograd
def edm_stochastic(sde: SDE, score_fn: ScoreFn, shape=None, *, steps: int = 40, S_churn: float = 40.0,
                   S_min: float = 0.05, S_max: float = 50.0, S_noise: float = 1.0, sigma_min: float | None = None,
                   sigma_max: float | None = None, rho: float = 7.0, x_init: torch.Tensor | None = None,
                   generator: GeneratorLike = None, callback: Callback = None, device=None,
                   dtype=torch.float32) -> SampleResult:
    """EDM's stochastic sampler (Alg. 2) with churn; EDM's ImageNet settings except S_noise = 1
    (EDM's 1.003 offsets a learned denoiser's bias; with an exact score it only adds noise)."""
    run = edm_sample.__wrapped__
    return run(sde, score_fn, shape, steps=steps, S_churn=S_churn, S_min=S_min, S_max=S_max,
               S_noise=S_noise, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, x_init=x_init,
               generator=generator, callback=callback, device=device, dtype=dtype)
