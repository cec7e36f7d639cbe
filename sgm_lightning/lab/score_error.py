"""E4 `score-error`: robustness of sampling to an L2 score error of size epsilon.

Lee, Lu & Tan (2022) assume only E_{p_t}||s - grad log p_t||^2 <= eps^2 and conclude that the
output error grows polynomially (here: smoothly, about linearly) in eps and vanishes with it.

* Sweep: PC sampling (OU, T = 5, reverse diffusion + Langevin, snr 0.16) of
  0.8 N(6 e_1, I/4) + 0.2 N(-6 e_1, I/4) with ``analytic.SmoothError`` (a smooth random field)
  or ``analytic.BiasError`` (a constant offset) of exact L2 size eps. Every eps uses the same
  noise (a coupling of the eps-run with the exact-score run), and we measure the fraction of
  samples that end in a different mode than with the exact score (a coupling bound on the
  mode-label TV) and the rms displacement of the others (a coupling bound on the within-mode
  W2). Plain W2 is not used: moving mass delta between modes 12 apart costs 12 sqrt(delta).
* Exact check: plain Langevin on N(0, lambda I) with a bias eps u has stationary mean eps lambda u.
* The bad set (E4b, :mod:`.bad_set`): L2-small error that traps cold starts but not warm ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..analytic import BiasError, SmoothError
from ..metrics import mode_weights
from ..sde import OUSDE
from . import bad_set
from .common import LabContext, LabResult, call_sampler, loglog_slope, new_figure
from .pc import mixture, within_mode_sw2

NAME = "score-error"
SNR = 0.16
LMC_LAMBDA, LMC_STEP = 2.0, 0.05


def sweep(d: int, eps_grid, kind: str, n: int, steps: int, ctx: LabContext, stream: int) -> list[dict]:
    from ..sampling import pc_sample

    mix = mixture(d)
    sde = OUSDE(T=5.0, N=steps)
    exact = mix.score_fn(sde)
    out, x0, lab0 = [], None, None
    for eps in eps_grid:
        if kind == "smooth":
            score = SmoothError(exact, mix, sde, eps, n_features=16, length_scale=1.0, seed=stream)
        else:
            score = BiasError(exact, eps, dim=d)
        x, nfe = call_sampler(pc_sample, sde, score, (n, d), ctx=ctx, predictor="reverse_diffusion",
                              corrector="langevin", snr=SNR, steps=steps, denoise=True,
                              generator=ctx.generator(stream))  # same noise for every eps
        x = x.detach().cpu().double()
        lab = mix.assign(x)
        if x0 is None:
            x0, lab0 = x, lab
        same = lab == lab0
        out.append({"kind": kind, "d": d, "eps": eps, "nfe": nfe,
                    "flip_fraction": float((~same).double().mean()),
                    "within_mode_rms": float((x[same] - x0[same]).pow(2).sum(1).mean().sqrt()),
                    "mode_weight_error": float((mode_weights(x, mix) - mix.weights).abs().max()),
                    "within_mode_sw2": within_mode_sw2(x, mix, torch.Generator().manual_seed(stream))})
    return out


def lmc_bias(eps_grid, n: int, steps: int, ctx: LabContext) -> list[dict]:
    """Plain Langevin on N(0, lambda I) with score -x/lambda + eps e_1: mean -> eps lambda e_1."""
    from ..sampling import langevin

    out = []
    for i, eps in enumerate(eps_grid):
        g = ctx.generator(900 + i)
        x0 = math.sqrt(LMC_LAMBDA) * torch.randn(n, 2, generator=g, device=ctx.device, dtype=ctx.dtype)
        score = BiasError(lambda x, t: -x / LMC_LAMBDA, eps, dim=2)
        t0 = torch.zeros(n, device=ctx.device, dtype=ctx.dtype)
        x, _ = call_sampler(langevin, lambda x, score=score, t0=t0: score(x, t0), x0, ctx=ctx, step_size=LMC_STEP,
                            n_steps=steps, generator=g)
        # stationary std of the chain: sqrt(lambda / (1 - h / (2 lambda)))  (docs/theory.md E6)
        se = math.sqrt(LMC_LAMBDA / (1 - LMC_STEP / (2 * LMC_LAMBDA)) / n)
        out.append({"eps": eps, "mean_e1": float(x[:, 0].mean()), "predicted": eps * LMC_LAMBDA, "se": se})
    return out


def run(ctx: LabContext) -> LabResult:
    if ctx.quick:
        dims, eps_grid, n, steps, lmc_steps = [2], [0.0, 0.1, 0.3, 1.0], 1000, 50, 300
    else:
        dims, eps_grid, n, steps, lmc_steps = [2, 16], [0.0, 0.03, 0.1, 0.3, 1.0, 2.0], 3000, 100, 600
    curves = []
    for d in dims:
        for j, kind in enumerate(("smooth", "bias")):
            curves += sweep(d, eps_grid, kind, n, steps, ctx, stream=300 + 10 * d + j)
    slopes = {}
    for d in dims:
        for kind in ("smooth", "bias"):
            pts = [c for c in curves if c["d"] == d and c["kind"] == kind and c["eps"] > 0]
            for m in ("flip_fraction", "within_mode_rms"):
                ok = [c for c in pts if c[m] > 0]
                slopes[f"{kind} d={d} {m}"] = loglog_slope([c["eps"] for c in ok], [c[m] for c in ok])[0] \
                    if len(ok) > 1 else float("nan")
    lmc = lmc_bias(eps_grid[1:], n, lmc_steps, ctx)
    bad = bad_set.run_bad_set(ctx)
    rows = [[c["kind"], c["d"], c["eps"], c["flip_fraction"], c["within_mode_rms"], c["within_mode_sw2"]]
            for c in curves]
    rows += [["bad set: " + r["sampler"], bad_set.DIM, r.get("levels", "-"), r["trapped"], r["nfe"], "-"]
             for r in bad["runs"] if r["threshold"] == 4.0]
    headers = ["error / sampler", "d", "eps / levels", "flip frac / trapped", "within-mode rms / NFE", "mode SW2"]
    data = {"params": {"snr": SNR, "steps": steps, "n": n, "eps": eps_grid, "lmc_lambda": LMC_LAMBDA,
                       "lmc_steps": lmc_steps}, "curves": curves, "loglog_slopes": slopes, "lmc_bias": lmc,
            "bad_set": bad}
    return LabResult(NAME, data, plot(curves, lmc, bad, dims), headers, rows, claim_lines(data))


def claim_lines(data) -> list[str]:
    s = data["loglog_slopes"]
    lines = ["Predicted: output error grows smoothly (about linearly) in eps and vanishes as eps -> 0. Measured "
             "log-log slopes vs eps: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items()) + "."]
    lm = data["lmc_bias"]
    lines.append("Predicted: a bias eps moves Langevin's stationary mean on N(0, 2I) by 2 eps. Measured: "
                 + ", ".join(f"{r['mean_e1']:.3f} (pred {r['predicted']:.3f})" for r in lm) + ".")
    runs = [r for r in data["bad_set"]["runs"] if r["threshold"] == 4.0]
    cold = runs[0]
    lines.append(f"Bad set (p(B) = {cold['p_bad_set']:.1e}, L2 error {cold['l2_error']:.3f}): cold-start Langevin "
                 f"trapped {cold['trapped']:.3f}; annealed " + ", ".join(
                     f"{r['levels']}x{r['steps_each']}: {r['trapped']:.3f}" for r in runs[1:]) + ".")
    colds = [r for r in data["bad_set"]["runs"] if r["sampler"] == "cold LMC"]
    if len(colds) > 1:
        warm = {r["threshold"]: r for r in data["bad_set"]["runs"]
                if r["sampler"] == "annealed" and r["levels"] == 20 and r["steps_each"] == 100}
        lines.append("As p(B) shrinks " + ", ".join(
            f"{c['p_bad_set']:.1e}: cold {c['trapped']:.3f} / annealed {warm[c['threshold']]['trapped']:.4f}"
            for c in colds) + " (cold does not shrink with p(B)).")
    return lines


def plot(curves, lmc, bad, dims):
    fig, (ax0, ax1, ax2) = new_figure(3)
    for d, ls in zip(dims, ("-", "--")):
        for kind, c in (("smooth", "C0"), ("bias", "C3")):
            pts = [p for p in curves if p["d"] == d and p["kind"] == kind and p["eps"] > 0]
            e = np.array([p["eps"] for p in pts])
            ax0.loglog(e, [max(p["flip_fraction"], 1e-4) for p in pts], ls, marker="o", color=c, ms=4,
                       label=f"{kind} d={d}: mode-flip fraction")
            ax0.loglog(e, [p["within_mode_rms"] for p in pts], ls, marker="s", color=c, ms=4, mfc="none",
                       label=f"{kind} d={d}: within-mode rms shift")
    e = np.array(sorted({p["eps"] for p in curves if p["eps"] > 0}))
    first = [p for p in curves if p["eps"] == e[0] and p["d"] == dims[0] and p["kind"] == "smooth"][0]
    ax0.loglog(e, first["within_mode_rms"] * e / e[0], "k:", lw=1, label="prediction: linear in eps")
    ax0.set(xlabel="L2 score error eps", ylabel="coupled output change vs exact score",
            title="PC sampler (OU) with injected error")
    ax1.errorbar([r["eps"] for r in lmc], [r["mean_e1"] for r in lmc], [2 * r["se"] for r in lmc], fmt="o",
                 color="C3", label="measured mean of x_1 (+-2 SE)")
    ee = np.linspace(0, max(r["eps"] for r in lmc), 20)
    ax1.plot(ee, LMC_LAMBDA * ee, "k--", lw=1, label="prediction eps * lambda")
    ax1.set(xlabel="bias eps", ylabel="stationary mean shift", title=f"Langevin on N(0, {LMC_LAMBDA:g} I) with bias")
    runs = [r for r in bad["runs"] if r["threshold"] == 4.0]
    labels = ["cold" if r["sampler"] == "cold LMC" else f"{r['levels']}x{r['steps_each']}" for r in runs]
    ax2.bar(range(len(runs)), [r["trapped"] for r in runs], yerr=[2 * r["se"] for r in runs],
            color=["C0" if lab == "cold" else "C3" for lab in labels])
    ax2.axhline(runs[0]["start_in_bad_set"], color="C0", ls="--", lw=1, label="prediction cold: P(start in B)")
    ax2.axhline(runs[0]["p_bad_set"], color="k", ls=":", lw=1, label="p(B)")
    ax2.set_xticks(range(len(runs)), labels, rotation=45, fontsize=7)
    ax2.set(xlabel="sampler (levels x steps per level)", ylabel="fraction trapped in the spurious mode",
            title="bad set: cold vs annealed")
    for ax in (ax0, ax1, ax2):
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle("E4 score-error: L2-accurate scores, smooth/bias errors and the bad set", fontsize=10)
    return fig
