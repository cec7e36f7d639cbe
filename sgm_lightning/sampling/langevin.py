"""Langevin Monte Carlo and annealed Langevin dynamics (NCSN / NCSNv2).

* :func:`langevin`: x <- x + h s(x) + sqrt(2h) z on a fixed target (LLT22 sec. 2a). On
  N(m, s^2 I) its stationary law is N(m, s^2 / (1 - h / (2 s^2))) (theory.md E6).
* :func:`annealed_langevin`: NCSNv2's ALD (Song & Ermon 2020, Alg. 1 with the code's
  x + alpha s + sqrt(2 alpha) z convention): levels from the largest noise to the smallest, each
  run for ``n_steps_each`` steps with alpha_i = step_lr (sigma_i / sigma_L)^2; the output of one
  level is the warm start of the next (LLT22 Alg. 1). ``denoise`` ends with Tweedie's step.
"""

from __future__ import annotations

import math

import torch

from ..rng import GeneratorLike, as_generator
from ..sde import SDE, VESDE, ScoreFn
from .base import (
    Callback,
    SampleResult,
    check_int,
    check_number,
    noise,
    start,
    tweedie_denoise,
)


def langevin(score, x0: torch.Tensor, *, step_size: float, n_steps: int,
             generator: GeneratorLike = None, callback: Callback = None) -> torch.Tensor:
    """Plain LMC from ``x0`` ``(B, ...)`` with ``score(x) -> grad log p(x)`` (no time argument).

    Returns the final samples (a Tensor, as in DESIGN.md); the tensor also carries ``.nfe``
    (= ``n_steps``) and ``.x`` (itself) so it reads like a :class:`SampleResult`.
    """
    h = check_number("step_size", step_size, positive=True)
    n_steps = check_int("n_steps", n_steps, 1)
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2:
        raise ValueError("x0: expected a tensor of shape (B, ...)")
    gen = as_generator(generator, x0.shape[0])
    x, noise_scale = x0.detach().clone(), math.sqrt(2 * h)
    for i in range(n_steps):
        s = score(x)
        if i == 0 and s.shape != x.shape:
            raise ValueError(f"x0: score returned shape {tuple(s.shape)} for x of shape {tuple(x.shape)}")
        x = x + h * s + noise_scale * noise(x, gen)
        if callback is not None:
            callback(i, float("nan"), x)
    x.nfe, x.x = n_steps, x
    return x


def ald_levels(sde: SDE, levels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Times ``(L,)`` (descending noise) and their marginal stds for ALD, float64.

    VE: the geometric ladder ``sde.discrete_sigmas`` (largest first), at t = t_from_sigma(sigma).
    Other processes: ``sde.N`` times from T down to ``sde.eps``. ``levels`` overrides the times.
    """
    if levels is not None:
        ts = torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
        if ts.numel() < 1 or not torch.all(ts[:-1] > ts[1:]) or ts.min() < 0 or ts.max() > sde.T:
            raise ValueError(f"levels: need strictly decreasing times in [0, T={sde.T}]")
    elif isinstance(sde, VESDE):
        ts = sde.t_from_sigma(sde.discrete_sigmas.double().flip(0)).clamp(0, sde.T)
    else:
        ts = torch.linspace(sde.T, sde.eps, sde.N, dtype=torch.float64)
    return ts, sde.marginal_coeffs(ts)[1]


def annealed_langevin(sde: SDE, score_fn: ScoreFn, shape=None, *, n_steps_each: int = 5,
                      step_lr: float | None = None, denoise: bool = True, levels=None,
                      x_init: torch.Tensor | None = None, generator: GeneratorLike = None,
                      callback: Callback = None, device=None, dtype=torch.float32) -> SampleResult:
    """ALD over the noise levels of ``sde`` (see :func:`ald_levels`), from the prior.

    ``step_lr`` = eps of alpha_i = eps (sigma_i / sigma_L)^2; default for VE: NCSNv2's technique 4
    (:func:`sgm_lightning.noise_design.ald_step_size`). NFE = L * n_steps_each (+1 if ``denoise``).
    ``callback(i, t, x)`` runs after each level i.
    """
    n_steps_each = check_int("n_steps_each", n_steps_each, 1)
    ts, stds = ald_levels(sde, levels)
    if step_lr is None:
        if not isinstance(sde, VESDE) or levels is not None:
            raise ValueError("step_lr: required unless sampling a VESDE on its own ladder (technique 4)")
        from ..noise_design import ald_step_size

        step_lr = ald_step_size(stds.numpy(), n_steps_each)
    step_lr = check_number("step_lr", step_lr, positive=True)
    x, gen, score = start(sde, score_fn, shape, x_init, generator, device, dtype)
    alphas = (step_lr * (stds / stds[-1]) ** 2).tolist()  # alpha_i, python floats: no syncs in the loop
    tvec = ts.to(device=x.device, dtype=x.dtype)[:, None].expand(-1, x.shape[0])
    for i, alpha in enumerate(alphas):
        t, noise_scale = tvec[i], math.sqrt(2 * alpha)
        for _ in range(n_steps_each):
            x = x + alpha * score(x, t) + noise_scale * noise(x, gen)
        if callback is not None:
            callback(i, t, x)
    if denoise:
        x = tweedie_denoise(sde, score, x, tvec[-1])
    return SampleResult(x, score.nfe, {"step_lr": step_lr, "levels": len(alphas)})
