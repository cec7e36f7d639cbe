"""Correctors: Langevin steps at a fixed time t (Song et al. 2021, App. G, Alg. 4/5).

Every corrector is a pure function with injected noise, reusable by inpainting/colourisation:

    corrector(sde, score_fn, x, t, z, *, snr, norms="batch") -> (x_new, x_mean)

``x`` ``(B, ...)``, ``t`` ``(B,)``, ``z`` standard normal noise shaped like x; one score call.

* ``langevin``: step eps = 2 alpha (r ||z|| / ||s||)^2, so that ||eps s|| / ||sqrt(2 eps) z|| =
  sqrt(alpha) r (alpha = 1 - beta_i for VP/sub-VP as in score_sde, 1 otherwise).
  ``norms="batch"``: the norms are averaged over the batch (score_sde); stable in every
  dimension, but sample k then depends on its batch. ``norms="sample"``: per-sample norms, each
  sample independent of its batch; in low dimension ||s|| can be tiny near a mode centre, the
  step explodes and the modes widen (docs/sampling.md, "Langevin-corrector norms"); in image dimensions the norms
  concentrate and per-sample is safe.
* ``ald``: NCSN's annealed step eps = 2 alpha (r std(t))^2 (per sample by construction).
"""

from __future__ import annotations

import torch

from ..sde import SDE, ScoreFn, bcast

NORMS = ("batch", "sample")


def corrector_alpha(sde: SDE, t: torch.Tensor):
    """score_sde's alpha: the DDPM alpha_i = 1 - beta_i at t's level for VP/sub-VP, else 1
    (:meth:`sgm_lightning.sde.SDE.corrector_alpha`)."""
    return sde.corrector_alpha(t)


def _norms(v: torch.Tensor, norms: str) -> torch.Tensor:
    n = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)
    if norms != "batch":
        return n
    # the batch mean over finite rows only: one sample gone NaN must not poison the whole batch
    finite = torch.isfinite(n)
    return torch.where(finite, n, 0).sum() / finite.sum().clamp_min(1)


def langevin_update(score_fn: ScoreFn, x, t, z, sqrt_alpha, snr: float, norms: str = "batch"):
    """The Langevin corrector given sqrt(alpha) (broadcastable against x): with c = r ||z|| / ||s||,
    eps = 2 alpha c^2 and the noise scale sqrt(2 eps) = 2 sqrt(alpha) c (no sqrt per step)."""
    s = score_fn(x, t)
    c = snr * _norms(z, norms) / _norms(s, norms)
    c = c if c.ndim == 0 else bcast(c, x)
    x_mean = torch.addcmul(x, 2 * (sqrt_alpha * c) ** 2, s)
    return torch.addcmul(x_mean, 2 * sqrt_alpha * c, z), x_mean


def langevin_corrector_step(sde: SDE, score_fn: ScoreFn, x, t, z, *, snr: float, norms: str = "batch"):
    """x_mean = x + eps s(x, t), x = x_mean + sqrt(2 eps) z, eps = 2 alpha (snr ||z|| / ||s||)^2."""
    return langevin_update(score_fn, x, t, z, bcast(corrector_alpha(sde, t).sqrt(), x), snr, norms)


def ald_coeffs(sde: SDE, t: torch.Tensor, snr: float):
    """NCSN's annealed step eps = 2 alpha (snr std(t))^2: returns ``(eps, sqrt(2 eps))`` like ``t``."""
    step = 2 * corrector_alpha(sde, t) * (snr * sde.marginal_coeffs(t)[1]) ** 2
    return step, torch.sqrt(2 * step)


def ald_corrector_step(sde: SDE, score_fn: ScoreFn, x, t, z, *, snr: float, norms: str = "batch"):
    """NCSN's annealed Langevin step, eps = 2 alpha (snr std(t))^2 (``norms`` is unused)."""
    step, noise_scale = (bcast(c, x) for c in ald_coeffs(sde, t, snr))
    x_mean = torch.addcmul(x, step, score_fn(x, t))
    return torch.addcmul(x_mean, noise_scale, z), x_mean


def none_corrector_step(sde, score_fn, x, t, z, *, snr=0.0, norms="batch"):
    """No corrector (predictor-only sampling)."""
    return x, x


CORRECTORS = {
    "langevin": langevin_corrector_step,
    "ald": ald_corrector_step,
    "none": none_corrector_step,
}
