"""Predictors: one reverse-time step from t to t_next < t (Song et al. 2021, sec. 4.2, App. G).

Every predictor is a pure function with injected noise, reusable by inpainting/colourisation:

    predictor(sde, score_fn, x, t, t_next, z) -> (x_new, x_mean)

Three of them are affine in (x, s): ``<name>_coeffs(sde, t, t_next) -> (keep, coef, noise_scale)``
and :func:`affine_update` apply them; :func:`pc_sample` precomputes the coefficients.

``x`` ``(B, ...)``, ``t``/``t_next`` ``(B,)`` times, ``z`` standard normal noise shaped like x;
``x_mean`` is the step without its noise term. One score call each (``none``: zero).

With s = s(t), std = std(t) from ``sde.marginal_coeffs`` and r = s(t)/s(t_next), the forward
transition between the two grid times is x_t = r x_{t_next} + G z with G^2 = std_t^2 - r^2 std_next^2
(SMLD for VE, DDPM's beta = 1 - r^2 for VP), so each step works for any grid, not only sde.N levels.
"""

from __future__ import annotations

import torch

from ..sde import SDE, ScoreFn, bcast


def _coeffs(sde: SDE, t: torch.Tensor, t_next: torch.Tensor):
    """``(s_t, std_t, s_next, std_next, r, G^2)``, each shaped like ``t``."""
    a, sd = sde.marginal_coeffs(t)
    an, sdn = sde.marginal_coeffs(t_next)
    r = a / an
    return a, sd, an, sdn, r, (sd**2 - (r * sdn) ** 2).clamp_(min=0)


def affine_update(score_fn: ScoreFn, x, t, z, keep, coef, noise_scale):
    """x_mean = keep x + coef s(x, t), x_new = x_mean + noise_scale z (coefficients broadcast
    against x; ``keep=None`` means 1). The common form of the predictors below."""
    base = x if keep is None else keep * x
    x_mean = torch.addcmul(base, coef, score_fn(x, t))
    return torch.addcmul(x_mean, noise_scale, z), x_mean


def euler_maruyama_step(sde: SDE, score_fn: ScoreFn, x, t, t_next, z):
    """Reverse SDE, Euler-Maruyama: x_mean = x + (f - g^2 s) dt, x = x_mean + g sqrt(-dt) z, dt < 0."""
    drift, g = sde.sde(x, t)
    dt = t_next - t
    x_mean = x + bcast(dt, x) * (drift - bcast(g**2, x) * score_fn(x, t))
    return x_mean + bcast(g * torch.sqrt(-dt), x) * z, x_mean


def reverse_diffusion_coeffs(sde: SDE, t, t_next):
    """Song et al. eq. (46): x_mean = x - f + G^2 s with the forward step f = (r - 1) x, then + G z.

    VE: x + (sigma_t^2 - sigma_next^2) s (SMLD); VP: (2 - sqrt(1 - beta)) x + beta s (DDPM).
    Returns ``(keep, coef, noise_scale)`` shaped like ``t`` (see :func:`affine_update`).
    """
    *_, r, G2 = _coeffs(sde, t, t_next)
    return 2 - r, G2, G2.sqrt()


def ancestral_coeffs(sde: SDE, t, t_next):
    """Ancestral sampling: draw from q(x_next | x_t, x0_hat), x0_hat = (x + std^2 s) / s_t (Tweedie).

    Posterior mean  s_next G^2 / std_t^2 * x0_hat + r std_next^2 / std_t^2 * x,
    variance        G^2 std_next^2 / std_t^2.
    VE: x + (sigma_t^2 - sigma_n^2) s with variance sigma_n^2 (sigma_t^2 - sigma_n^2) / sigma_t^2 (SMLD);
    VP: DDPM's mean (x + beta s) / sqrt(1 - beta) with the posterior variance beta_tilde
    (score_sde uses beta; both are first-order, beta_tilde errs low, beta high).
    """
    a, sd, an, sdn, r, G2 = _coeffs(sde, t, t_next)
    var_t = sd**2
    c0 = an * G2 / var_t / a  # weight of x0_hat, divided by s_t
    return c0 + r * sdn**2 / var_t, c0 * var_t, torch.sqrt(G2 * sdn**2 / var_t)


def exponential_coeffs(sde: SDE, t, t_next):
    """Exponential integrator: the linear drift and the noise are integrated exactly, the score is
    frozen at (x, t) (LLT22 Alg. 2; for OU: e^h x + 2 (e^h - 1) s + sqrt(e^{2h} - 1) z).

    x_mean = (s_next / s_t) x + c s, noise variance s_next^2 (sigma_t^2 - sigma_next^2) with
    sigma = std / s the EDM noise level (exact for every affine process).
    """
    a, sd, an, sdn, _, _ = _coeffs(sde, t, t_next)
    c = sde.exponential_drift_coeff(a, an, sd, sdn)
    var = an**2 * ((sd / a) ** 2 - (sdn / an) ** 2)
    return an / a, c, var.clamp(min=0).sqrt()


def _affine_step(coeffs):
    def step(sde: SDE, score_fn: ScoreFn, x, t, t_next, z):
        keep, coef, noise_scale = (bcast(c, x) for c in coeffs(sde, t, t_next))
        return affine_update(score_fn, x, t, z, keep, coef, noise_scale)

    step.__name__ = coeffs.__name__.replace("_coeffs", "_step")
    step.__doc__ = coeffs.__doc__
    return step


reverse_diffusion_step = _affine_step(reverse_diffusion_coeffs)
ancestral_step = _affine_step(ancestral_coeffs)
exponential_step = _affine_step(exponential_coeffs)


def none_step(sde, score_fn, x, t, t_next, z):
    """No predictor (corrector-only sampling)."""
    return x, x


#: predictors of the form x_mean = keep x + coef s, whose coefficients depend on (t, t_next) only:
#: samplers precompute them for the whole grid (no per-step coefficient arithmetic)
AFFINE_COEFFS = {
    "reverse_diffusion": reverse_diffusion_coeffs,
    "ancestral": ancestral_coeffs,
    "exponential": exponential_coeffs,
}

PREDICTORS = {
    "euler_maruyama": euler_maruyama_step,
    "reverse_diffusion": reverse_diffusion_step,
    "ancestral": ancestral_step,
    "exponential": exponential_step,
    "none": none_step,
}
