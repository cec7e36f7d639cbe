"""Predictors: one reverse-time step from t to t_next < t (Song et al. 2021, sec. 4.2, App. G).

Every predictor is a pure function with injected noise, reusable by inpainting/colourisation:

    predictor(sde, score_fn, x, t, t_next, z) -> (x_new, x_mean)

``x`` ``(B, ...)``, ``t``/``t_next`` ``(B,)`` times, ``z`` standard normal noise shaped like x;
``x_mean`` is the step without its noise term. One score call each (``none``: zero).

With s = s(t), std = std(t) from ``sde.marginal_coeffs`` and r = s(t)/s(t_next), the forward
transition between the two grid times is x_t = r x_{t_next} + G z with G^2 = std_t^2 - r^2 std_next^2
(SMLD for VE, DDPM's beta = 1 - r^2 for VP), so each step works for any grid, not only sde.N levels.
"""

from __future__ import annotations

import torch

from ..sde import SDE, OUSDE, SubVPSDE, VESDE, VPSDE, ScoreFn, bcast


def _coeffs(sde: SDE, t: torch.Tensor, t_next: torch.Tensor):
    """``(s_t, std_t, s_next, std_next, r, G^2)``, each ``(B,)``."""
    a, sd = sde.marginal_coeffs(t)
    an, sdn = sde.marginal_coeffs(t_next)
    r = a / an
    return a, sd, an, sdn, r, (sd**2 - (r * sdn) ** 2).clamp_(min=0)


def euler_maruyama_step(sde: SDE, score_fn: ScoreFn, x, t, t_next, z):
    """Reverse SDE, Euler-Maruyama: x_mean = x + (f - g^2 s) dt, x = x_mean + g sqrt(-dt) z, dt < 0."""
    drift, g = sde.sde(x, t)
    dt = t_next - t
    x_mean = x + bcast(dt, x) * (drift - bcast(g**2, x) * score_fn(x, t))
    return x_mean + bcast(g * torch.sqrt(-dt), x) * z, x_mean


def reverse_diffusion_step(sde: SDE, score_fn: ScoreFn, x, t, t_next, z):
    """Song et al. eq. (46): x_mean = x - f + G^2 s with the forward step f = (r - 1) x, then + G z.

    VE: x + (sigma_t^2 - sigma_next^2) s (SMLD); VP: (2 - sqrt(1 - beta)) x + beta s (DDPM).
    """
    *_, r, G2 = _coeffs(sde, t, t_next)
    x_mean = bcast(2 - r, x) * x + bcast(G2, x) * score_fn(x, t)
    return x_mean + bcast(G2.sqrt(), x) * z, x_mean


def ancestral_step(sde: SDE, score_fn: ScoreFn, x, t, t_next, z):
    """Ancestral sampling: draw from q(x_next | x_t, x0_hat), x0_hat = (x + std^2 s) / s_t (Tweedie).

    Posterior mean  s_next G^2 / std_t^2 * x0_hat + r std_next^2 / std_t^2 * x,
    variance        G^2 std_next^2 / std_t^2.
    VE: x + (sigma_t^2 - sigma_n^2) s with variance sigma_n^2 (sigma_t^2 - sigma_n^2) / sigma_t^2 (SMLD);
    VP: DDPM's mean (x + beta s) / sqrt(1 - beta) with the posterior variance beta_tilde.
    """
    a, sd, an, sdn, r, G2 = _coeffs(sde, t, t_next)
    var_t = sd**2
    x0_hat = (x + bcast(var_t, x) * score_fn(x, t)) / bcast(a, x)
    x_mean = bcast(an * G2 / var_t, x) * x0_hat + bcast(r * sdn**2 / var_t, x) * x
    return x_mean + bcast(torch.sqrt(G2 * sdn**2 / var_t), x) * z, x_mean


def _exponential_drift_coeff(sde: SDE, a, an, sd, sdn):
    """int_{t_next}^{t} s_next / s_tau g(tau)^2 dtau for the frozen-score exponential integrator."""
    A = an / a
    if isinstance(sde, VESDE):
        return sd**2 - sdn**2
    if isinstance(sde, (VPSDE, OUSDE)):  # g^2 = 2 lambda, d(1/s)/dt = lambda / s
        return 2 * (A - 1)
    if isinstance(sde, SubVPSDE):  # g^2 = beta (1 - s^4)
        return 2 * (A - 1) - (2.0 / 3.0) * an * (an**3 - a**3)
    raise ValueError(f"predictor: 'exponential' supports VE, VP, sub-VP and OU, not {type(sde).__name__}")


def exponential_step(sde: SDE, score_fn: ScoreFn, x, t, t_next, z):
    """Exponential integrator: the linear drift and the noise are integrated exactly, the score is
    frozen at (x, t) (LLT22 Alg. 2; for OU: e^h x + 2 (e^h - 1) s + sqrt(e^{2h} - 1) z).

    x_mean = (s_next / s_t) x + c s, noise variance s_next^2 (sigma_t^2 - sigma_next^2) with
    sigma = std / s the EDM noise level (exact for every affine process).
    """
    a, sd, an, sdn, _, _ = _coeffs(sde, t, t_next)
    c = _exponential_drift_coeff(sde, a, an, sd, sdn)
    var = an**2 * ((sd / a) ** 2 - (sdn / an) ** 2)
    x_mean = bcast(an / a, x) * x + bcast(c, x) * score_fn(x, t)
    return x_mean + bcast(var.clamp(min=0).sqrt(), x) * z, x_mean


def none_step(sde, score_fn, x, t, t_next, z):
    """No predictor (corrector-only sampling)."""
    return x, x


PREDICTORS = {
    "euler_maruyama": euler_maruyama_step,
    "reverse_diffusion": reverse_diffusion_step,
    "ancestral": ancestral_step,
    "exponential": exponential_step,
    "none": none_step,
}
