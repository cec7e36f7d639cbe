"""The probability-flow ODE dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 (Song et al. 2021, eq. 13),
integrated from t_start (default T) down to eps in torch on the samples' device.

Fixed-step ``euler`` (1 NFE/step), ``heun`` (2), ``rk4`` (4) on a time grid; adaptive
``rk45``/``dopri5`` (Dormand-Prince via torchdiffeq, with ``rtol``/``atol``; its error norm
covers the whole batch, so the steps taken depend on the batch). ``nfe`` counts every call,
including the adaptive solver's initial-step probes. ``denoise`` ends with Tweedie's step.

Two first-order methods. ``euler`` steps in the EDM noise level sigma = std / s on the
scaled-out state x~ = x / s (k-diffusion's and EDM's Euler; DDIM for VP): dx~/dsigma =
-sigma s(t) score, so for VE x' = x - sigma_i (sigma_{i+1} - sigma_i) s. It is exact when the
data is a point, whatever the step count. ``euler_t`` steps in t (score_sde's Euler), for VE
x' = x - sigma_i^2 log(sigma_max / sigma_min) dt s; at equal NFE it is several times less
accurate (``tests/test_sampling_ode_euler.py`` measures it).
"""

from __future__ import annotations

import torch

from ..rng import GeneratorLike
from ..sde import SDE, ScoreFn, bcast
from .base import (
    GRIDS,
    Callback,
    SampleResult,
    check_choice,
    check_int,
    check_number,
    check_time_range,
    report,
    start,
    time_grid,
    tweedie_denoise,
    without_autograd,
)

FIXED_METHODS = ("euler", "euler_t", "heun", "rk4")
ADAPTIVE_METHODS = ("rk45", "dopri5")
METHODS = FIXED_METHODS + ADAPTIVE_METHODS


def _euler_sigma_step(sde: SDE, score, x, t, t_next):
    """x~' = x~ + (sigma' - sigma) dx~/dsigma with dx~/dsigma = -sigma s(t) score(x, t), x = s x~."""
    (s, std), (s_next, std_next) = sde.marginal_coeffs(t), sde.marginal_coeffs(t_next)
    sigma, sigma_next = std / s, std_next / s_next
    x_tilde = x / bcast(s, x) - bcast((sigma_next - sigma) * sigma * s, x) * score(x, t)
    return bcast(s_next, x) * x_tilde


def _fixed_step(method: str, drift, x, t, t_next):
    """One explicit Runge-Kutta step of dx/dt = drift(x, t) from t to t_next (``(B,)`` times)."""
    h = (t_next - t)[0]  # the grid is shared by the batch
    k1 = drift(x, t)
    if method == "euler_t":
        return x + h * k1
    if method == "heun":
        k2 = drift(x + h * k1, t_next)
        return x + 0.5 * h * (k1 + k2)
    t_mid = 0.5 * (t + t_next)
    k2 = drift(x + 0.5 * h * k1, t_mid)
    k3 = drift(x + 0.5 * h * k2, t_mid)
    k4 = drift(x + h * k3, t_next)
    return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


class _FlowODE(torch.nn.Module):
    """torchdiffeq adaptor: forward(t, x) with a scalar t; reports accepted steps to ``report``.

    torchdiffeq tells an accepted step's start (t0, y0), not its end: step k's end state is
    reported when step k + 1 is accepted, and the last one by the caller after the solve.
    """

    def __init__(self, drift, batch: int, report):
        super().__init__()
        self.drift, self.batch, self.report, self.accepted = drift, batch, report, 0

    def forward(self, t, x):
        return self.drift(x, t.expand(self.batch))

    def callback_accept_step(self, t0, y0, dt):
        if self.report is not None and self.accepted > 0:
            self.report(self.accepted - 1, y0, t0)
        self.accepted += 1


@without_autograd
def ode_sample(sde: SDE, score_fn: ScoreFn, shape=None, *, method: str = "rk45", steps: int | None = None,
               rtol: float = 1e-5, atol: float = 1e-5, denoise: bool = True, eps: float | None = None,
               t_start: float | None = None, x_init: torch.Tensor | None = None,
               generator: GeneratorLike = None, callback: Callback = None, grid: str = "uniform",
               device=None, dtype=torch.float32) -> SampleResult:
    """Probability-flow ODE sampler. ``steps`` (fixed methods; default ``sde.N``) steps on the
    ``grid`` (uniform | log_sigma, see :func:`.base.time_grid`).

    ``generator`` only draws the prior sample (the ODE itself is deterministic). ``callback(step)``
    (:class:`.base.SamplerStep`) runs after each fixed step, and for adaptive methods after each
    accepted step.
    """
    check_choice("method", method, METHODS)
    check_choice("grid", grid, GRIDS)
    rtol, atol = check_number("rtol", rtol, positive=True), check_number("atol", atol, positive=True)
    t_start, eps = check_time_range(sde, t_start, eps)
    if method in FIXED_METHODS:
        steps = check_int("steps", sde.N if steps is None else steps, 1)
    elif steps is not None:
        raise ValueError(f"steps: adaptive method {method!r} chooses its own steps; pass rtol/atol instead")
    x, _, score = start(sde, score_fn, shape, x_init, generator, device, dtype)

    def drift(x, t):
        return sde.probability_flow_drift(score, x, t)

    B = x.shape[0]
    if method in FIXED_METHODS:
        tv = time_grid(t_start, eps, steps, B, x, grid, sde)
        for i in range(steps):
            if method == "euler":
                x = _euler_sigma_step(sde, score, x, tv[i], tv[i + 1])
            else:
                x = _fixed_step(method, drift, x, tv[i], tv[i + 1])
            report(callback, i, x, tv[i + 1], sde=sde, score_fn=score)
        t_end = tv[-1]
    else:
        from torchdiffeq import odeint

        span = torch.tensor([t_start, eps], dtype=x.dtype, device=x.device)
        step_report = None if callback is None else (
            lambda i, y, t: report(callback, i, y, t, sde=sde, score_fn=score))
        flow = _FlowODE(drift, B, step_report)
        x = odeint(flow, x, span, rtol=rtol, atol=atol, method="dopri5",
                   options={"step_t": span})[-1]  # never step past eps (t < 0 is undefined for VP)
        t_end = span[-1].expand(B)
        if step_report is not None and flow.accepted > 0:
            step_report(flow.accepted - 1, x, t_end)
    if denoise:
        x = tweedie_denoise(sde, score, x, t_end)
    return SampleResult(x, score.nfe)
