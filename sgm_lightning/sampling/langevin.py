"""Langevin Monte Carlo and annealed Langevin dynamics (NCSN / NCSNv2).

* :func:`langevin`: x <- x + h s(x) + sqrt(2h) z on a fixed target (LLT22 sec. 2a). On
  N(m, s^2 I) its stationary law is N(m, s^2 / (1 - h / (2 s^2))) (docs/theory.md E6).
* :func:`annealed_langevin`: NCSNv2's ALD (Song & Ermon 2020, Alg. 1 with the code's
  x + alpha s + sqrt(2 alpha) z convention): levels from the largest noise to the smallest, each
  run for ``n_steps_each`` steps with alpha_i = step_lr (sigma_i / sigma_L)^2; the output of one
  level is the warm start of the next (LLT22 Alg. 1). ``denoise`` ends with Tweedie's step.
"""

from __future__ import annotations

import math

import torch

from ..rng import GeneratorLike, as_generator
from ..sde import SDE, ScoreFn
from .base import (
    Callback,
    SampleResult,
    check_int,
    check_number,
    noise,
    report,
    start,
    without_autograd,
)


@without_autograd
def langevin(score, x0: torch.Tensor, *, step_size: float, n_steps: int,
             generator: GeneratorLike = None, callback: Callback = None) -> SampleResult:
    """Plain LMC from ``x0`` ``(B, ...)`` with ``score(x) -> grad log p(x)`` (no time argument).
    Returns ``SampleResult(x, nfe=n_steps)``; ``callback`` sees clean states (t = sigma = 0).
    """
    h = check_number("step_size", step_size, positive=True)
    n_steps = check_int("n_steps", n_steps, 1)
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2:
        raise ValueError("x0: expected a tensor of shape (B, ...)")
    if not x0.is_floating_point() or x0.device.type == "meta":
        raise ValueError(f"x0: expected a floating-point tensor with values, got {x0.dtype} on {x0.device}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0: the start states hold NaN or inf")
    gen = as_generator(generator, x0.shape[0])
    x, noise_scale = x0.detach().clone(), math.sqrt(2 * h)
    for i in range(n_steps):
        s = score(x)
        if i == 0 and s.shape != x.shape:
            raise ValueError(f"x0: score returned shape {tuple(s.shape)} for x of shape {tuple(x.shape)}")
        x = x + h * s + noise_scale * noise(x, gen)
        report(callback, i, x)
    return SampleResult(x, n_steps)


def ald_levels(sde: SDE, levels=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Times ``(L,)`` (descending noise), their scales s(t) and EDM noise levels sigma(t), float64.

    VE: the geometric ladder ``sde.discrete_sigmas`` (largest first), at t = t_from_sigma(sigma).
    Other processes: ``sde.N`` geometric levels from sigma(T) to sigma(eps) (``sde.sigma_range``),
    at their times. ``levels`` overrides the times (keep them geometric in sigma: ALD assumes it).
    """
    if levels is not None:
        ts = torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
        if ts.numel() < 1 or not torch.all(ts[:-1] > ts[1:]) or ts.min() < 0 or ts.max() > sde.T:
            raise ValueError(f"levels: need strictly decreasing times in [0, T={sde.T}]")
    elif sde.ald_ladder() is not None:
        ts = sde.ald_ladder()
    else:
        lo, hi = sde.sigma_range()
        sig = torch.exp(torch.linspace(math.log(hi), math.log(lo), sde.N, dtype=torch.float64))
        ts = sde.t_from_sigma(sig).clamp(0, sde.T)
    scale, std = sde.marginal_coeffs(ts)
    return ts, scale, std / scale


@without_autograd
def annealed_langevin(sde: SDE, score_fn: ScoreFn, shape=None, *, n_steps_each: int = 5,
                      step_lr: float | None = None, denoise: bool = True, levels=None,
                      x_init: torch.Tensor | None = None, generator: GeneratorLike = None,
                      callback: Callback = None, device=None, dtype=torch.float32) -> SampleResult:
    """ALD over the noise levels of ``sde`` (see :func:`ald_levels`), from the prior.

    The chain runs on the scaled-out state x~ = x / s(t), whose law at level i is the data plus
    N(0, sigma_i^2 I) noise with sigma = std / s (EDM's noise level), and whose score is
    s(t) score(s(t) x~, t). For VE this is NCSN's ALD verbatim; for VP/sub-VP/OU it keeps the
    modes in place across levels (the x-space modes drift with s(t), which Langevin would have to
    chase). ``step_lr`` = eps of alpha_i = eps (sigma_i / sigma_L)^2; default for VE: NCSNv2's
    technique 4 (:func:`sgm_lightning.noise_design.ald_step_size`). ``denoise``: Tweedie's
    E[x_0 | x_L] = x~ + sigma_L^2 s(t_L) score; otherwise the output is x = s(t_L) x~, a sample of
    p_{t_L}. NFE = L * n_steps_each (+1 if ``denoise``). ``callback(step)`` after each level.
    """
    n_steps_each = check_int("n_steps_each", n_steps_each, 1)
    ts, scales, sigmas = ald_levels(sde, levels)
    if step_lr is None:
        if sde.ald_ladder() is None or levels is not None:
            raise ValueError("step_lr: required unless sampling a VESDE on its own ladder (technique 4)")
        from ..noise_design import ald_step_size

        step_lr = ald_step_size(sigmas.numpy(), n_steps_each)
    step_lr = check_number("step_lr", step_lr, positive=True)
    x, gen, score = start(sde, score_fn, shape, x_init, generator, device, dtype)
    # python floats: no device syncs in the loop
    alphas = (step_lr * (sigmas / sigmas[-1]) ** 2).tolist()
    scales_f = scales.tolist()
    tvec = ts.to(device=x.device, dtype=x.dtype)[:, None].expand(-1, x.shape[0])
    x = x / scales_f[0]
    for i, alpha in enumerate(alphas):
        t, a, noise_scale = tvec[i], scales_f[i], math.sqrt(2 * alpha)
        for _ in range(n_steps_each):  # x~ <- x~ + alpha s~ + sqrt(2 alpha) z, s~ = a score(a x~, t)
            s = score(x if a == 1.0 else a * x, t)
            x = torch.add(torch.add(x, s, alpha=alpha * a), noise(x, gen), alpha=noise_scale)
        report(callback, i, a * x, t, sde=sde, score_fn=score)
    if denoise:
        a = scales_f[-1]
        x = x + (sigmas[-1].item() ** 2 * a) * score(a * x, tvec[-1])
    else:
        x = scales_f[-1] * x
    return SampleResult(x, score.nfe, {"step_lr": step_lr, "levels": len(alphas)})
