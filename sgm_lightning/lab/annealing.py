"""E1 `annealing`: plain Langevin from a cold start returns basin fractions; annealed Langevin
returns the true mode weights (Lee, Lu & Tan 2022: "our proof depends essentially on using
annealing to obtain a warm start at each step").

Target p = 0.8 N(+mu, I) + 0.2 N(-mu, I), |mu| = 5 sqrt(2): mu = (5, 5) in d = 2, lifted as
5 sqrt(2) e_1 to d in {8, 32, 128}. Both samplers start from N(0, 20^2 I) and spend the same
number of score evaluations:

* plain Langevin (``sampling.langevin``) on the data score, step 0.05;
* annealed Langevin (``sampling.annealed_langevin``) over 10 geometric levels 20 -> 1 with
  alpha_i = 0.1 sigma_i^2 (so alpha / (1 + sigma_i^2) stays in [0.05, 0.1]), then Tweedie.

Prediction for plain Langevin: each chain stays in the basin of attraction it starts in, so the
heavy mode gets the fraction of N(0, 20^2 I) on its side of the density's saddle s*:
Phi(-s* / 20) (about 0.5, computed exactly below). Prediction for annealed: 0.8.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import optimize, special

from ..analytic import GaussianMixture
from ..metrics import mode_weights
from ..sde import VESDE
from .common import LabContext, LabResult, binomial_se, call_sampler, new_figure

NAME = "annealing"
WEIGHTS = (0.8, 0.2)
RADIUS = 5 * math.sqrt(2)  # |mu|
SIGMA_MAX, SIGMA_MIN, LEVELS, STEPS_EACH, STEP_LR = 20.0, 1.0, 10, 100, 0.1
LMC_STEP = 0.05


def mixture(d: int) -> GaussianMixture:
    """0.8 N(+mu, I) + 0.2 N(-mu, I) with mu = (5, 5) (d = 2) or 5 sqrt(2) e_1."""
    mu = torch.zeros(d, dtype=torch.float64)
    if d == 2:
        mu[:] = 5.0
    else:
        mu[0] = RADIUS
    return GaussianMixture(list(WEIGHTS), torch.stack([mu, -mu]), [1.0, 1.0])


def predicted_basin_fraction(init_std: float) -> tuple[float, float]:
    """Saddle s* of the density along the axis through the means, and Phi(-s* / init_std).

    Equal isotropic components: the score's component along u = mu / |mu| depends on x.u only,
    and the gradient flow sends x to the heavy mode iff x.u > s* (the density's local minimum).
    """
    a, (w1, w2) = RADIUS, WEIGHTS

    def score_1d(s: float) -> float:
        l1, l2 = math.log(w1) - (s - a) ** 2 / 2, math.log(w2) - (s + a) ** 2 / 2
        r1 = 1 / (1 + math.exp(l2 - l1))
        return r1 * (a - s) + (1 - r1) * (-a - s)

    s_star = optimize.brentq(score_1d, -a + 1.0, a - 1.0, xtol=1e-12)  # the unstable zero
    return s_star, float(special.ndtr(-s_star / init_std))


def run_dim(d: int, n: int, ctx: LabContext, stream: int, long_factor: int, steps_each: int) -> dict:
    from ..sampling import annealed_langevin, langevin

    mix = mixture(d)
    sde = VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, N=LEVELS)
    budget = LEVELS * steps_each
    g = ctx.generator(stream)
    x0 = SIGMA_MAX * torch.randn(n, d, generator=g, device=ctx.device, dtype=ctx.dtype)
    x_lmc, _ = call_sampler(langevin, mix.score, x0, ctx=ctx, step_size=LMC_STEP, n_steps=budget, generator=g)
    x_ald, nfe = call_sampler(annealed_langevin, sde, mix.score_fn(sde), (n, d), ctx=ctx,
                              n_steps_each=steps_each, step_lr=STEP_LR, denoise=True, generator=g)
    row = {"d": d, "n": n, "nfe_plain": budget, "nfe_annealed": nfe,
           "w_plain": float(mode_weights(x_lmc.cpu(), mix)[0]),
           "w_annealed": float(mode_weights(x_ald.cpu(), mix)[0])}
    if long_factor > 1:
        x_long, _ = call_sampler(langevin, mix.score, x0, ctx=ctx, step_size=LMC_STEP,
                                 n_steps=long_factor * budget, generator=g)
        row.update(w_plain_long=float(mode_weights(x_long.cpu(), mix)[0]), nfe_plain_long=long_factor * budget)
    row["se"] = binomial_se(WEIGHTS[0], n)
    if d == 2:
        keep = slice(0, 1500)
        row["scatter"] = {"plain": x_lmc[keep].cpu(), "annealed": x_ald[keep].cpu()}
    return row


def run(ctx: LabContext) -> LabResult:
    dims, n, steps = ([2, 32], 1000, 40) if ctx.quick else ([2, 8, 32, 128], 5000, STEPS_EACH)
    s_star, basin = predicted_basin_fraction(SIGMA_MAX)
    results = [run_dim(d, n, ctx, i, 1 if ctx.quick or d > 2 else 5, steps) for i, d in enumerate(dims)]
    rows = [[r["d"], r["nfe_plain"], r["w_plain"], basin, r["w_annealed"], WEIGHTS[0], r["se"]] for r in results]
    headers = ["d", "NFE", "w plain LMC", "predicted (basin)", "w annealed", "predicted (true)", "binomial SE"]
    claims = [
        f"Plain Langevin from N(0, 20^2 I): predicted heavy-mode fraction {basin:.3f} (the basin fraction); "
        "measured " + ", ".join(f"{r['w_plain']:.3f} (d={r['d']})" for r in results) + ".",
        "Annealed Langevin at the same NFE: predicted 0.8; measured "
        + ", ".join(f"{r['w_annealed']:.3f} (d={r['d']})" for r in results) + ".",
    ]
    if "w_plain_long" in results[0]:
        claims.append(f"Five times more plain Langevin steps (d=2, NFE {results[0]['nfe_plain_long']}) "
                      f"still gives {results[0]['w_plain_long']:.3f}: the cold start is not cured by time.")
    data = {"params": {"weights": WEIGHTS, "radius": RADIUS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN,
                       "levels": LEVELS, "steps_each": steps, "step_lr": STEP_LR, "lmc_step": LMC_STEP},
            "saddle": s_star, "predicted_basin_fraction": basin,
            "results": [{k: v for k, v in r.items() if k != "scatter"} for r in results]}
    return LabResult(NAME, data, plot(results, basin), headers, rows, claims)


def plot(results, basin):
    fig, (ax0, ax1) = new_figure(2)
    d = np.array([r["d"] for r in results])
    se = np.array([r["se"] for r in results])
    ax0.errorbar(d, [r["w_plain"] for r in results], 2 * se, fmt="o", color="C0", label="plain Langevin (measured)")
    ax0.errorbar(d, [r["w_annealed"] for r in results], 2 * se, fmt="s", color="C3",
                 label="annealed Langevin (measured)")
    if "w_plain_long" in results[0]:
        ax0.plot([results[0]["d"]], [results[0]["w_plain_long"]], "x", color="C0", ms=9,
                 label=f"plain, {results[0]['nfe_plain_long']} steps")
    ax0.axhline(WEIGHTS[0], color="C3", ls="--", lw=1, label="prediction annealed: true weight 0.8")
    ax0.axhline(basin, color="C0", ls="--", lw=1, label=f"prediction plain: basin fraction {basin:.3f}")
    ax0.set_xscale("log", base=2)
    ax0.set(xlabel="dimension d", ylabel="fraction of samples in the heavy mode", ylim=(0.3, 1.0),
            title="mode weight recovered (equal NFE, +-2 SE)")
    sc = results[0]["scatter"]
    ax1.scatter(*sc["plain"][:, :2].T.numpy(), s=2, alpha=0.4, color="C0", label="plain Langevin")
    ax1.scatter(*sc["annealed"][:, :2].T.numpy(), s=2, alpha=0.4, color="C3", label="annealed Langevin")
    ax1.plot([5, -5], [5, -5], "k+", ms=12, label="modes (w = 0.8, 0.2)")
    ax1.set(xlabel="x_1", ylabel="x_2", title="d = 2 samples")
    for ax in (ax0, ax1):
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle("E1 annealing: 0.8 N(+mu, I) + 0.2 N(-mu, I), start N(0, 20^2 I)", fontsize=10)
    return fig
