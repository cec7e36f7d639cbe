"""E4b: the bad-set attractor -- L2 score accuracy is enough only from a warm start.

Data N(0, I_10) under VE. At every level sigma (v = 1 + sigma^2) the score gains (8/sqrt v) e_1
on B_sigma = {x_1 > 4 sqrt v} (``analytic.BadSetError``): a spurious mode at 8 sqrt v on a set of
probability p(B) = Phi(-4) = 3.2e-5, so the L2 score error is only 8 sqrt(p(B)) = 0.045.

* Cold start: plain Langevin from U[-10, 10]^10 on the last level's score; every chain that
  starts (or wanders) into B stays there, so the trapped fraction is ~P_uniform(B), whatever p(B).
* Annealed Langevin (``sampling.annealed_langevin``, N(0, 20^2 I) start, levels 20 -> 1,
  alpha_i = 0.05 sigma_i^2): each level is a warm start for the next, so a chain meets B only
  through the small mass q(B) <= p(B) + sqrt(chi^2 p(B)); too few levels lose the warm start, and
  the union bound over steps says the trapped fraction grows with the number of steps.
"""

from __future__ import annotations

import math

import torch

from ..analytic import BadSetError, GaussianMixture
from ..sde import VESDE
from .common import LabContext, binomial_se, call_sampler

DIM = 10
SIGMA_MAX, SIGMA_MIN = 20.0, 1.0
STEP_LR = 0.05  # alpha_i = STEP_LR * sigma_i^2 (NCSN's rule with sigma_L = 1)
LMC_STEP, LMC_STEPS, COLD_BOX = 0.05, 2000, 10.0


def _setup(levels: int, threshold: float):
    data = GaussianMixture([1.0], torch.zeros(1, DIM, dtype=torch.float64), [1.0])
    sde = VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, N=levels)
    bad = BadSetError(data.score_fn(sde), data, sde, threshold=threshold, shift=threshold + 4.0)
    return sde, bad


def _trapped(x: torch.Tensor, threshold: float) -> float:
    """Fraction of samples inside the last level's bad set {x_1 > threshold sqrt(1 + sigma_L^2)},
    where the spurious drift pulls them to the fake mode."""
    edge = threshold * math.sqrt(1 + SIGMA_MIN**2)
    return float((x[:, 0].cpu() > edge).double().mean())


def cold_start(n: int, threshold: float, ctx: LabContext, stream: int, steps: int) -> dict:
    """Plain Langevin from U[-10, 10]^d on the (perturbed) last-level score."""
    from ..sampling import langevin

    sde, bad = _setup(2, threshold)
    t0 = torch.zeros(n, dtype=ctx.dtype, device=ctx.device)
    g = ctx.generator(stream)
    x0 = COLD_BOX * (2 * torch.rand(n, DIM, generator=g, device=ctx.device, dtype=ctx.dtype) - 1)
    x, _ = call_sampler(langevin, lambda x: bad(x, t0[: x.shape[0]]), x0, ctx=ctx, step_size=LMC_STEP,
                        n_steps=steps, generator=g)
    frac = _trapped(x, threshold)
    edge = threshold * math.sqrt(1 + SIGMA_MIN**2)
    return {"sampler": "cold LMC", "threshold": threshold, "nfe": steps, "trapped": frac,
            "se": binomial_se(frac, n), "p_bad_set": float(bad.region_mass(torch.tensor([0.0]))[0]),
            "l2_error": math.sqrt(float(bad.mean_sq_error(torch.tensor([0.0]))[0])),
            "start_in_bad_set": max(0.0, (COLD_BOX - edge) / (2 * COLD_BOX))}


def annealed(n: int, levels: int, steps_each: int, threshold: float, ctx: LabContext, stream: int) -> dict:
    from ..sampling import annealed_langevin

    sde, bad = _setup(levels, threshold)
    x, nfe = call_sampler(annealed_langevin, sde, bad, (n, DIM), ctx=ctx, n_steps_each=steps_each,
                          step_lr=STEP_LR, denoise=False, generator=ctx.generator(stream))
    frac = _trapped(x, threshold)
    gamma = (SIGMA_MAX / SIGMA_MIN) ** (1 / max(levels - 1, 1))
    return {"sampler": "annealed", "levels": levels, "steps_each": steps_each, "gamma": gamma,
            "threshold": threshold, "nfe": nfe, "trapped": frac, "se": binomial_se(frac, n),
            "p_bad_set": float(bad.region_mass(torch.tensor([0.0]))[0])}


def run_bad_set(ctx: LabContext) -> dict:
    """All bad-set runs: cold vs annealed, level count at fixed budget, budget, and p(B)."""
    if ctx.quick:
        n, thresholds, cold_steps = 2000, [4.0], 500
        schedules = [(3, 100), (20, 25)]
    else:
        n, thresholds, cold_steps = 4000, [3.0, 4.0, 5.0], LMC_STEPS
        schedules = [(3, 667), (5, 400), (10, 200), (20, 100), (40, 50), (80, 25), (20, 400), (80, 100), (80, 160)]
    runs, stream = [], 500
    for a in thresholds:
        stream += 1
        runs.append(cold_start(n, a, ctx, stream, cold_steps))
        for levels, steps in schedules if a == 4.0 else [(20, 100)]:
            stream += 1
            runs.append(annealed(n, levels, steps, a, ctx, stream))
    return {"n": n, "runs": runs}
