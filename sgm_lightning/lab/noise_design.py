"""E6 `noise-design`: NCSNv2's techniques computed for the framework's datasets, beside the
values the released configs use.

Technique 1 (sigma_1 ~ max pairwise data distance) needs the data: it is computed for the data
the framework ships offline (scikit-learn digits, the toy mixture of configs/toy_mixture.yaml);
for the image datasets we report the released sigma_1 (and the sqrt(D) bound for [0, 1] pixels).
Technique 2 (ratio gamma from the data dimension D) and technique 4 (ALD step size eps for T
steps per level, argmin of the Prop. 3 variance ratio) are computed by
:mod:`sgm_lightning.noise_design` and compared with ermongroup/ncsnv2's configs/*.yml.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import noise_design as nd
from .common import LabContext, LabResult, new_figure

NAME = "noise-design"
SIGMA_MIN = 0.01

#: ermongroup/ncsnv2 configs/*.yml: image size, channels, sigma_begin, num_classes, n_steps_each, step_lr
RELEASED = {
    "cifar10": dict(size=32, channels=3, sigma_1=50.0, L=232, T=5, step_lr=6.2e-6),
    "celeba": dict(size=64, channels=3, sigma_1=90.0, L=500, T=5, step_lr=3.3e-6),
    "lsun_church": dict(size=64, channels=3, sigma_1=140.0, L=788, T=4, step_lr=4.9e-6),
    "lsun_bedroom": dict(size=128, channels=3, sigma_1=190.0, L=1086, T=3, step_lr=1.8e-6),
    "ffhq": dict(size=256, channels=3, sigma_1=348.0, L=2311, T=3, step_lr=9e-7),
}
#: datasets without a released NCSNv2 config: (image size, channels)
UNRELEASED = {"mnist": (28, 1)}


def _safe(fn, *args) -> float:
    try:
        return float(fn(*args))
    except ValueError:
        return float("nan")


def design(D: int, sigma_1: float, T: int) -> dict:
    """Techniques 2 and 4 for dimension D, largest level sigma_1 and T steps per level."""
    gamma = _safe(nd.level_ratio, D)
    row = {"D": D, "sigma_1": sigma_1, "T": T, "gamma": gamma, "x_technique2": math.sqrt(2 * D) * (gamma - 1)}
    if math.isnan(gamma):
        row.update(L=float("nan"), step_lr=float("nan"), variance_ratio=float("nan"))
        return row
    L = nd.num_noise_levels(sigma_1, SIGMA_MIN, D)
    ladder = np.geomspace(sigma_1, SIGMA_MIN, L)
    eps = nd.ald_step_size(ladder, T)
    row.update(L=L, step_lr=eps, variance_ratio=float(nd.ald_variance_ratio(eps, ladder, T)))
    return row


def released_check(cfg: dict) -> dict:
    """Technique 4 on the *released* ladder: the best eps vs the released step_lr."""
    ladder = np.geomspace(cfg["sigma_1"], SIGMA_MIN, cfg["L"])
    best = nd.ald_step_size(ladder, cfg["T"])
    return {
        "gamma_released": float((cfg["sigma_1"] / SIGMA_MIN) ** (1 / (cfg["L"] - 1))),
        "step_lr_best_on_released_ladder": best,
        "variance_ratio_released": float(nd.ald_variance_ratio(cfg["step_lr"], ladder, cfg["T"])),
        "variance_ratio_best": float(nd.ald_variance_ratio(best, ladder, cfg["T"])),
    }


def shipped_data(ctx: LabContext) -> dict[str, dict]:
    """Technique 1 on the data the framework ships: digits (16x16) and the toy mixture."""
    from ..config import load_config
    from ..datasets import build_mixture, digits_images

    out = {}
    x, _ = digits_images(16)
    out["digits16"] = {"D": x[0].numel(), "sigma_1": nd.max_pairwise_distance(x), "T": 5,
                       "config_sigma_1": float("nan"), "n_data": x.shape[0]}
    cfg_path = Path(__file__).resolve().parents[2] / "configs" / "toy_mixture.yaml"
    cfg = load_config(cfg_path)
    n = 2000 if ctx.quick else 20000  # the config's own n_points in the full run
    pts = build_mixture(cfg.data).sample(n, ctx.generator(1, "cpu"))
    out["toy_mixture"] = {"D": pts.shape[1], "sigma_1": nd.max_pairwise_distance(pts), "T": 5,
                          "config_sigma_1": float(cfg.sde.sigma_max), "n_data": n}
    return out


def run(ctx: LabContext) -> LabResult:
    results, rows = {}, []
    for name, cfg in RELEASED.items():
        D = cfg["size"] ** 2 * cfg["channels"]
        r = {**design(D, cfg["sigma_1"], cfg["T"]), **released_check(cfg), "released": cfg}
        results[name] = r
        rows.append([name, D, cfg["sigma_1"], r["gamma"], r["gamma_released"], r["L"], cfg["L"],
                     r["step_lr"], r["step_lr_best_on_released_ladder"], cfg["step_lr"]])
    for name, (size, ch) in UNRELEASED.items():
        D = size * size * ch
        r = design(D, math.sqrt(D), 5)  # sigma_1 <= sqrt(D): the largest distance of [0,1] images
        r["sigma_1_note"] = "upper bound sqrt(D) for pixels in [0, 1]; MNIST is not shipped"
        results[name] = r
        rows.append([name, D, r["sigma_1"], r["gamma"], float("nan"), r["L"], "-", r["step_lr"], float("nan"), "-"])
    for name, s in shipped_data(ctx).items():
        r = {**design(s["D"], s["sigma_1"], s["T"]), **s}
        results[name] = r
        rows.append([name, s["D"], s["sigma_1"], r["gamma"], float("nan"), r["L"],
                     "-", r["step_lr"], float("nan"), "-"])
    headers = ["dataset", "D", "sigma_1", "gamma (T2)", "gamma released", "L (T2)", "L released",
               "eps (T4, our L)", "eps (T4, released L)", "eps released"]
    return LabResult(NAME, {"sigma_min": SIGMA_MIN, "datasets": results}, plot(results), headers, rows,
                     claim_lines(results))


def claim_lines(res: dict) -> list[str]:
    c = res["cifar10"]
    lines = [
        f"CIFAR-10: technique 2 gives gamma = {c['gamma']:.4f} (released ladder {c['gamma_released']:.4f}); "
        f"technique 4 on the released L = 232, T = 5 ladder gives eps = {c['step_lr_best_on_released_ladder']:.3g} "
        "(released 6.2e-06).",
    ]
    ratios = ", ".join(f"{n} {r['step_lr_best_on_released_ladder'] / r['released']['step_lr']:.2f}"
                       for n, r in res.items() if "released" in r)
    lines.append(f"Technique 4 on each released ladder, computed/released step_lr: {ratios}.")
    toy = res["toy_mixture"]
    lines.append(f"Technique 1 on the toy mixture: max pairwise distance {toy['sigma_1']:.2f} "
                 f"(configs/toy_mixture.yaml uses sigma_max = {toy['config_sigma_1']:g}); digits 16x16: "
                 f"{res['digits16']['sigma_1']:.2f}.")
    return lines


def plot(res: dict):
    fig, (ax0, ax1) = new_figure(2, width=5.2)
    Ds = np.geomspace(5.5, 3e5, 200)
    g = np.array([_safe(nd.level_ratio, int(D)) for D in Ds])
    ax0.loglog(Ds, g - 1, "k-", lw=1, label="technique 2 (computed)")
    ax0.loglog(Ds, 1.0 / np.sqrt(Ds), "k:", lw=1, label="slope -1/2 (warm start, E5)")
    for name, r in res.items():
        if "released" in r:
            ax0.loglog(r["D"], r["gamma_released"] - 1, "o", label=f"{name} released")
    ax0.set(xlabel="data dimension D", ylabel="level ratio gamma - 1",
            title="gamma: technique 2 vs released configs")
    names = [n for n, r in res.items() if "released" in r]
    best = [res[n]["step_lr_best_on_released_ladder"] for n in names]
    rel = [res[n]["released"]["step_lr"] for n in names]
    ax1.loglog(rel, best, "o", color="C3", label="technique 4 on the released ladder")
    for n, xr, yb in zip(names, rel, best):
        ax1.annotate(n, (xr, yb), fontsize=7, xytext=(3, -8), textcoords="offset points")
    lim = [min(rel + best) / 1.5, max(rel + best) * 1.5]
    ax1.loglog(lim, lim, "k--", lw=1, label="prediction: equal")
    ax1.set(xlabel="released step_lr", ylabel="computed step_lr (argmin of Prop. 3 ratio)",
            title="ALD step size: technique 4 vs released")
    for ax in (ax0, ax1):
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle("E6 noise-design: NCSNv2 techniques 2 and 4, computed vs released", fontsize=10)
    return fig
