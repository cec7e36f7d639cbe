"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), multistep second order, in the
data-prediction form on EDM's scaled-out state x~ = x / s(t) with noise level sigma.

With lambda = -log sigma and h_i = lambda_{i+1} - lambda_i the update is

    x~_{i+1} = (sigma_{i+1} / sigma_i) x~_i - expm1(-h_i) D_i',
    D_i' = (1 + 1/(2 r_i)) D_i - 1/(2 r_i) D_{i-1},   r_i = h_{i-1} / h_i,

with first-order D_i' = D_i on the first step; the last step (sigma = 0) returns D. One NFE per
step. For VP, x~ = x / alpha_t and sigma = sigma_t / alpha_t make this exactly the paper's
update in (alpha, sigma) form. The denoiser comes from the score (:class:`.edm.Denoiser`).
"""

from __future__ import annotations

import math

import torch

from ..rng import GeneratorLike
from ..sde import SDE, ScoreFn
from .base import Callback, SampleResult, check_choice, check_int, report, without_autograd
from .edm import Denoiser, default_sigma_range, karras_sigmas, start_scaled

SCHEDULES = ("logsnr", "karras")


def dpm_sigmas(steps: int, sigma_min: float, sigma_max: float, schedule: str = "logsnr",
               rho: float = 7.0) -> torch.Tensor:
    """``(steps + 1,)`` levels ending in 0: uniform in log sigma (= logSNR, DPM-Solver's choice)
    or EDM's rho-schedule."""
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "karras":
        return karras_sigmas(steps, sigma_min, sigma_max, rho)
    steps = check_int("steps", steps, 1)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    s = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64))
    return torch.cat([s, s.new_zeros(1)])


@without_autograd
def dpm_solver_2m(sde: SDE, score_fn: ScoreFn, shape=None, *, steps: int = 20, schedule: str = "logsnr",
                  sigma_min: float | None = None, sigma_max: float | None = None, rho: float = 7.0,
                  x_init: torch.Tensor | None = None, generator: GeneratorLike = None,
                  callback: Callback = None, device=None, dtype=torch.float32) -> SampleResult:
    """DPM-Solver++(2M); NFE = ``steps``. ``generator`` only draws the starting noise."""
    sigma_min, sigma_max = default_sigma_range(sde, sigma_min, sigma_max)
    sigmas = dpm_sigmas(steps, sigma_min, sigma_max, schedule, rho).tolist()
    x, _, score = start_scaled(sde, score_fn, shape, x_init, generator, device, dtype, sigma_max)
    D = Denoiser(sde, score, x.shape[0], x)
    levels = [D.level(s) for s in sigmas[:-1]]
    denoised_prev, h_prev = None, None
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = D(x, levels[i])
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)  # lambda_{i+1} - lambda_i
            d = denoised
            if denoised_prev is not None:
                r = h_prev / h
                # (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}
                d = torch.add(denoised, denoised - denoised_prev, alpha=1 / (2 * r))
            x = torch.add(x * (sigma_next / sigma), d, alpha=-math.expm1(-h))
            h_prev = h
        denoised_prev = denoised
        if callback is not None:
            if sigma_next > 0:
                t, scale, _ = levels[i + 1] if i + 1 < len(levels) else D.level(sigma_next)
                report(callback, i, scale * x, t, sde=sde, score_fn=score)
            else:
                report(callback, i, x)
    return SampleResult(x, score.nfe)
