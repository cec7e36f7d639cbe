"""E7 `score-meter`: the exact L2 score error of a trained network, beside its DSM loss.

Lee, Lu & Tan (2022) assume E_{p_t}||s_theta(., t) - grad log p_t||^2 <= eps_t^2 at every noise
level. For a model trained on configs/toy_mixture.yaml (a Gaussian mixture, so grad log p_t
is exact: ``data.build_mixture`` + ``analytic.GaussianMixture.score_fn``) we measure eps_t^2
directly, per noise level, next to the DSM loss the trainer minimises. Vincent's identity says

    E||s_theta(x_t, t) + z / std(t)||^2 = eps_t^2 + C(t),   C(t) = E||grad log p_t + z / std||^2
                                                                 = d / std^2 - J(p_t)

(the cross term has mean zero), so the DSM loss differs from the quantity the theorem needs by
a constant a user cannot see without the exact score; here it is computed and checked.
The model is trained with the ordinary trainer (:func:`sgm_lightning.training.train`) in a temporary folder.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import torch

from .common import LabContext, LabResult, new_figure

NAME = "score-meter"


def train_model(ctx: LabContext, root: str):
    """Train configs/toy_mixture.yaml (quick: 150 steps; full: the config's 3000)."""
    from ..training import train
    from ..training.config import load_config

    ov = ["logging.logger=csv", f"logging.save_dir={root}", f"checkpoint.dir={root}", "sample.at_end=false",
          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", f"seed={ctx.seed}",
          "name=score-meter", "trainer.accelerator=" + ("gpu" if ctx.device.type == "cuda" else "cpu")]
    if ctx.quick:
        ov += ["trainer.max_steps=150", "trainer.val_check_interval=150", "data.n_points=3000"]
    cfg = load_config("toy_mixture", ov)
    res = train(cfg, config_name="toy_mixture")
    val = res.trainer.callback_metrics.get("val/loss")
    return cfg, res.module, (None if val is None else float(val))


@torch.no_grad()
def measure(module, mixture, t: float, n: int, gen: torch.Generator) -> dict:
    """eps_t^2, the network's DSM value, the exact score's DSM value C(t) and the gap at time t."""
    sde, dev = module.sde, module.device
    x0 = mixture.sample(n, gen, dtype=torch.float32, device=dev)
    z = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(dev)
    tt = torch.full((n,), t, dtype=torch.float32, device=dev)
    std = sde.marginal_coeffs(tt)[1][:, None]
    xt = sde.perturb(x0, tt, z)
    with module.ema_scope():
        s_net = module.score_fn()(xt, tt)
        trainer_loss = module.loss_terms(x0, u=torch.full((n,), (t - module.cfg.loss.eps) /
                                                          (sde.T - module.cfg.loss.eps), device=dev), z=z)[0]
    s_true = mixture.score_fn(sde)(xt.double(), tt.double()).float()
    err = (s_net - s_true).pow(2).sum(1)
    dsm_net = (s_net + z / std).pow(2).sum(1)
    dsm_true = (s_true + z / std).pow(2).sum(1)
    gap = dsm_net - dsm_true - err  # = 2 <s_net - s_true, s_true + z/std>: mean zero
    d = x0.shape[1]
    return {"t": t, "sigma": float(sde.sigma(tt[:1])[0]), "std": float(std[0, 0]),
            "l2_error_sq": float(err.mean()), "l2_error_sq_se": float(err.std() / math.sqrt(n)),
            "dsm_net": float(dsm_net.mean()), "dsm_exact": float(dsm_true.mean()),
            "constant_predicted": float(d / std[0, 0] ** 2 - s_true.pow(2).sum(1).mean()),
            "fisher": float(s_true.pow(2).sum(1).mean()),  # J(p_t) = E||grad log p_t||^2
            "relative_l2_error": float((err.mean() / s_true.pow(2).sum(1).mean()).sqrt()),
            "gap_mean": float(gap.mean()), "gap_se": float(gap.std() / math.sqrt(n)),
            "trainer_loss": float(trainer_loss.mean()),
            "trainer_loss_from_dsm": float(std[0, 0] ** 2 / d * dsm_net.mean())}


def run(ctx: LabContext) -> LabResult:
    from ..datasets import build_mixture

    with tempfile.TemporaryDirectory(prefix="sgm-score-meter-") as root:
        cfg, module, val_loss = train_model(ctx, root)
    module.eval()
    mixture = build_mixture(cfg.data)
    sde = module.sde
    lo, hi = sde.sigma_range(cfg.loss.eps)
    sigmas = np.geomspace(max(lo, 0.02), hi, 6 if ctx.quick else 12)
    n = 4000 if ctx.quick else 20000
    gen = torch.Generator().manual_seed(ctx.seed + 7)
    levels = [measure(module, mixture, float(sde.t_from_sigma(torch.tensor(s, dtype=torch.float64))), n, gen)
              for s in sigmas]
    rows = [[r["sigma"], r["l2_error_sq"], r["relative_l2_error"], r["dsm_net"], r["dsm_exact"],
             r["dsm_net"] - r["dsm_exact"], r["gap_mean"], r["gap_se"]] for r in levels]
    headers = ["sigma", "eps^2 (exact L2 err)", "eps / sqrt(J)", "DSM net", "C = DSM exact", "DSM net - C",
               "gap", "gap SE"]
    z = [abs(r["gap_mean"]) / max(r["gap_se"], 1e-12) for r in levels]
    claims = [
        "Predicted: DSM loss = exact L2 score error + C(sigma). Measured: |DSM - C - eps^2| / SE = "
        + ", ".join(f"{v:.1f}" for v in z) + f" across sigma = {sigmas[0]:.2g} ... {sigmas[-1]:.3g}.",
        "Exact L2 score error eps_sigma^2 of the trained net: " + ", ".join(
            f"{r['l2_error_sq']:.3g} (sigma {r['sigma']:.2g})" for r in levels)
        + f"; DSM constant C is {levels[0]['dsm_exact']:.3g} at the smallest sigma.",
    ]
    data = {"config": "configs/toy_mixture.yaml", "train_steps": int(cfg.trainer.max_steps),
            "val_loss": val_loss, "n": n, "levels": levels}
    return LabResult(NAME, data, plot(levels), headers, rows, claims)


def plot(levels):
    fig, (ax0, ax1) = new_figure(2, width=5.0)
    s = np.array([r["sigma"] for r in levels])
    ax0.loglog(s, [r["dsm_net"] for r in levels], "o-", color="C0", label="DSM loss of the net (measured)")
    ax0.loglog(s, [r["dsm_exact"] for r in levels], "--", color="k", label="C(sigma): DSM of the exact score")
    ax0.loglog(s, [r["l2_error_sq"] for r in levels], "s-", color="C3", label="exact L2 error eps^2 (measured)")
    ax0.loglog(s, [max(r["dsm_net"] - r["dsm_exact"], 1e-6) for r in levels], "x:", color="C2", ms=8,
               label="prediction: DSM - C")
    ax0.set(xlabel="noise level sigma", ylabel="E||.||^2 (unweighted)", title="DSM loss vs exact score error")
    e = np.array([r["l2_error_sq"] for r in levels])
    g = np.array([r["dsm_net"] - r["dsm_exact"] for r in levels])
    se = np.array([r["gap_se"] for r in levels])
    ax1.errorbar(e, g, 2 * se, fmt="o", color="C0", label="measured (+-2 SE)")
    lim = [min(e.min(), g[g > 0].min() if (g > 0).any() else e.min()) / 2, max(e.max(), g.max()) * 2]
    ax1.loglog(lim, lim, "k--", lw=1, label="prediction: DSM - C = eps^2")
    ax1.set(xlabel="exact L2 score error eps^2", ylabel="DSM loss - C", title="the known constant, checked")
    for ax in (ax0, ax1):
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle("E7 score-meter: toy-mixture model trained with sgm train", fontsize=10)
    return fig
