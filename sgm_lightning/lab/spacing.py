"""E5 `spacing`: the level ratio gamma that keeps annealed Langevin warm, against dimension.

Lee, Lu & Tan (2022) need each noise level's output to be a warm start for the next:
chi^2(p_{sigma_k} || p_{sigma_{k+1}}) = O(1). For a (near) point mass and
sigma_k^2 = gamma^2 sigma_{k+1}^2 this is 1 + chi^2 = (1 - delta^2)^{-d/2}, delta = gamma^2 - 1
(docs/theory.md, Sec. 2b), so the warm start is a function of sqrt(d) (gamma - 1) only: the final
error should collapse onto one curve against sqrt(d) (gamma - 1), and the largest acceptable
ratio should shrink like gamma* - 1 ~ d^{-1/2} -- NCSNv2's technique 2 seen from the theory.

Everything here is exact: the data N(0, diag lambda) are Gaussian and ALD
x <- x + alpha s(x) + sqrt(2 alpha) z (alpha_i = h sigma_i^2, NCSNv2's rule) is affine, so
each coordinate's variance obeys var' = a^2 var + 2 alpha with a = 1 - alpha / v, v = lambda +
sigma^2; T steps of it have the closed form used in :func:`level_update`. When the
samplers package is present, a Monte Carlo run of its ``annealed_langevin`` checks the recursion.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .common import LabContext, LabResult, crossing, loglog_slope, new_figure

NAME = "spacing"

SIGMA_MIN = 0.01  # sigma_L, the last level
SIGMA_MAX = 1.0  # sigma_1, the first level (the prior's std)
DATA_STD = (0.005, 0.02)  # per-coordinate data stds, log-spaced: a near point mass
H = 0.2  # alpha_i = H sigma_i^2 (so alpha / v ~ H at the large levels)
T_EACH = 5  # Langevin steps per level
KL_LEVEL = 0.05  # the accuracy that defines gamma*(d)


def data_variances(d: int, ctx: LabContext) -> torch.Tensor:
    """lambda_j, j < d: log-spaced between DATA_STD[0]^2 and DATA_STD[1]^2 -> ``(d,)``."""
    lo, hi = (2 * math.log(s) for s in DATA_STD)
    return torch.exp(torch.linspace(lo, hi, d, dtype=ctx.dtype, device=ctx.device))


def ladder(gamma: float) -> tuple[torch.Tensor, float]:
    """Geometric levels SIGMA_MAX -> SIGMA_MIN with ratio closest to ``gamma`` (descending).

    Returns the float64 levels and the ratio actually used, span^(1/(L-1)).
    """
    span = math.log(SIGMA_MAX / SIGMA_MIN)
    L = max(2, round(1 + span / math.log(gamma)))
    sig = torch.exp(torch.linspace(math.log(SIGMA_MAX), math.log(SIGMA_MIN), L, dtype=torch.float64))
    return sig, math.exp(span / (L - 1))


def level_update(var: torch.Tensor, v: torch.Tensor, alpha: float, steps: int) -> torch.Tensor:
    """Exact variance after ``steps`` Langevin steps x <- a x + sqrt(2 alpha) z, a = 1 - alpha/v.

    var_T = a^{2T} var_0 + 2 alpha (1 - a^{2T}) / (1 - a^2)   (geometric sum of the recursion).
    """
    a2 = (1 - alpha / v) ** 2
    a2T = a2**steps
    return a2T * var + 2 * alpha * (1 - a2T) / (1 - a2)


def stationary_variance(v: torch.Tensor, alpha: float) -> torch.Tensor:
    """The Langevin chain's own stationary variance 2 alpha / (1 - a^2) = v / (1 - alpha/(2v))."""
    return v / (1 - alpha / (2 * v))


def kl_gauss(var_q: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(0, diag var_q) || N(0, diag var_p)) summed over the last dim (nats)."""
    r = var_q / var_p
    return 0.5 * (r - 1 - torch.log(r)).sum(-1)


def log1p_chi2(var_q: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """ln(1 + chi^2(N(0,var_q) || N(0,var_p))) = -1/2 sum ln(r (2 - r)); inf when r >= 2."""
    r = var_q / var_p
    inside = r * (2 - r)
    out = -0.5 * torch.log(inside.clamp_min(1e-300)).sum(-1)
    return torch.where((inside <= 0).any(-1), torch.full_like(out, math.inf), out)


def anneal(lam: torch.Tensor, sigmas: torch.Tensor, sizes: list[int]) -> list[dict[str, float]]:
    """Propagate per-coordinate variances through ALD on ``sigmas`` (descending).

    ``lam`` concatenates the data variances of several problems of dimensions ``sizes`` (the
    recursion is per coordinate, so they run together). For each problem returns the final KL
    to the chain's stationary law at the last level (the error the warm start controls), the KL
    to the exact last-level law, and ln(1 + chi^2) of the last level's start against its
    stationary law (the warm-start quantity itself).
    """
    sig = sigmas.tolist()
    var = torch.full_like(lam, sig[0] ** 2)  # prior N(0, sigma_1^2 I)
    var_in = var
    for s in sig:
        var_in = var
        var = level_update(var, lam + s**2, H * s**2, T_EACH)
    v_last = lam + sig[-1] ** 2
    pi_last = stationary_variance(v_last, H * sig[-1] ** 2)
    out = []
    for q, qi, p, v in zip(*(t.split(sizes) for t in (var, var_in, pi_last, v_last))):
        out.append({"kl_stationary": float(kl_gauss(q, p)), "kl_level": float(kl_gauss(q, v)),
                    "log1p_chi2_warm": float(log1p_chi2(qi, p))})
    return out


def grid(ctx: LabContext) -> tuple[list[int], np.ndarray]:
    if ctx.quick:
        return [16, 64, 256, 1024], np.logspace(math.log10(0.004), 0, 14)
    return [16, 64, 256, 1024, 4096], np.logspace(math.log10(0.002), 0, 40)


def run(ctx: LabContext) -> LabResult:
    dims, gm1 = grid(ctx)
    rows, curves = [], {d: [] for d in dims}
    lam = torch.cat([data_variances(d, ctx) for d in dims])
    for g in gm1:
        sig, g_eff = ladder(1 + float(g))
        for d, m in zip(dims, anneal(lam, sig, dims)):
            curves[d].append({"gamma": g_eff, "levels": len(sig), **m})
    summary = summarize(dims, curves, ctx)
    for d in dims:
        s = summary["per_dim"][str(d)]
        levels = 1 + math.log(SIGMA_MAX / SIGMA_MIN) / math.log(s["gamma_star"])
        rows.append([d, s["gamma_star"], s["x_star"], levels, s["gamma_technique2"], s["kl_at_gamma_1.1"]])
    claims = claim_lines(summary)
    data = {
        "params": {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "data_std": DATA_STD, "h": H,
                   "steps_each": T_EACH, "kl_level": KL_LEVEL, "dims": dims},
        "curves": {str(d): c for d, c in curves.items()},
        "summary": summary,
    }
    headers = ["d", "gamma*", "sqrt(d)(gamma*-1)", "levels at gamma*", "NCSNv2 T2 gamma", "KL at gamma=1.1"]
    return LabResult(NAME, data, plot(dims, curves, summary), headers, rows, claims)


def _technique2_gamma(d: int) -> float:
    """NCSNv2 technique 2's ratio for dimension d (NaN when it has no root, d <= 4)."""
    from ..noise_design import level_ratio

    try:
        return float(level_ratio(d))
    except ValueError:
        return float("nan")


def summarize(dims, curves, ctx: LabContext) -> dict:
    per_dim, gstars = {}, []
    for d in dims:
        g = np.array([p["gamma"] for p in curves[d]])
        kl = np.array([p["kl_stationary"] for p in curves[d]])
        gstar = crossing(g - 1, kl, KL_LEVEL)
        gstars.append(gstar)
        at11 = float(np.exp(np.interp(math.log(0.1), np.log(g - 1), np.log(kl))))
        per_dim[str(d)] = {"gamma_star": 1 + gstar, "x_star": math.sqrt(d) * gstar,
                           "gamma_technique2": _technique2_gamma(d), "kl_at_gamma_1.1": at11}
    slope, _ = loglog_slope(dims, gstars)
    return {"per_dim": per_dim, "slope_gamma_star_vs_d": slope, "predicted_slope": -0.5,
            "collapse": collapse_spread(dims, curves)}


def collapse_spread(dims, curves) -> dict:
    """Spread (std over d of log KL) at fixed sqrt(d)(gamma-1) vs at fixed gamma.

    Both are evaluated where every d has a finite KL between 1e-3 and 10; a collapse means the
    first is much smaller than the second.
    """
    logs = {}
    for d in dims:
        g = np.array([p["gamma"] for p in curves[d]]) - 1
        kl = np.array([p["kl_stationary"] for p in curves[d]])
        logs[d] = (np.log(g), np.log(np.maximum(kl, 1e-300)))
    probe_x = np.logspace(math.log10(0.3), math.log10(3.0), 9)
    probe_g = np.logspace(math.log10(0.02), math.log10(0.2), 9)
    at_x = np.array([[np.interp(math.log(x / math.sqrt(d)), *logs[d]) for d in dims] for x in probe_x])
    at_g = np.array([[np.interp(math.log(gg), *logs[d]) for d in dims] for gg in probe_g])
    return {"std_logkl_fixed_x": float(at_x.std(1).mean()), "std_logkl_fixed_gamma": float(at_g.std(1).mean()),
            "probe_x": probe_x, "probe_gamma_minus_1": probe_g}


def claim_lines(summary) -> list[str]:
    c = summary["collapse"]
    return [
        "Predicted: final KL is one function of sqrt(d)(gamma-1). Measured: the spread of log KL "
        f"across d is {c['std_logkl_fixed_x']:.3f} at fixed sqrt(d)(gamma-1) vs "
        f"{c['std_logkl_fixed_gamma']:.3f} at fixed gamma.",
        f"Predicted: gamma*-1 ~ d^-0.5. Measured slope of log(gamma*-1) vs log d: "
        f"{summary['slope_gamma_star_vs_d']:.3f} (gamma* = largest ratio with KL <= {KL_LEVEL}).",
    ]


def plot(dims, curves, summary):
    fig, (ax0, ax1, ax2) = new_figure(3)
    for d in dims:
        g = np.array([p["gamma"] for p in curves[d]]) - 1
        kl = np.array([p["kl_stationary"] for p in curves[d]])
        chi = np.array([p["log1p_chi2_warm"] for p in curves[d]])
        (line,) = ax0.loglog(g, kl, "o-", ms=3, label=f"d={d}")
        x = math.sqrt(d) * g
        ax1.loglog(x, kl, "o-", ms=3, color=line.get_color(), label=f"d={d} measured")
        delta = (1 + g) ** 2 - 1
        pred = np.where(delta < 1, -0.5 * d * np.log1p(-np.minimum(delta, 0.999999) ** 2), np.nan)
        ax2.loglog(x, chi, "o", ms=3, color=line.get_color(), label=f"d={d} measured")
        ax2.loglog(x, pred, "--", color=line.get_color(), lw=1)
    ax0.axhline(KL_LEVEL, color="k", lw=0.8, ls=":")
    ax0.set(xlabel="level ratio gamma - 1", ylabel="KL(final || stationary law) [nats]",
            title="final error vs gamma: no collapse")
    ax1.axhline(KL_LEVEL, color="k", lw=0.8, ls=":", label=f"KL = {KL_LEVEL}")
    ax1.set(xlabel="sqrt(d) (gamma - 1)", ylabel="KL(final || stationary law) [nats]",
            title="prediction: collapse onto one curve")
    ax2.plot([], [], "k--", lw=1, label="predicted -d/2 ln(1-(gamma^2-1)^2)")
    ax2.set(xlabel="sqrt(d) (gamma - 1)", ylabel="ln(1 + chi^2) of last level's start",
            title="warm start: measured vs point-mass formula")
    for ax in (ax0, ax1, ax2):
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"E5 spacing: ALD, {T_EACH} steps/level, alpha = {H} sigma^2; slope of gamma*-1 vs d "
                 f"= {summary['slope_gamma_star_vs_d']:.2f} (predicted -0.5)", fontsize=10)
    return fig
