"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

The probability-flow ODE dx/dt = f~(x, t) = f(x, t) - g(t)^2 s(x, t) / 2 carries p_eps to p_T,
and the instantaneous change of variables (Chen et al. 2018, eq. 39 of Song et al. 2021) gives

    log p_eps(x(eps)) = log p_T(x(T)) + int_eps^T div f~(x(t), t) dt.

The divergence is the trace of a D x D Jacobian; the Hutchinson estimator replaces it by
E_v[v^T (d f~/dx) v] with E[v v^T] = I (Rademacher or Gaussian v), computed with one
vector-Jacobian product per evaluation. As in score_sde, one v per sample is drawn before the
solve and kept fixed along the trajectory, so the integrand is a smooth function of t and the
estimate of log p is unbiased. ``estimator="exact"`` takes the full trace (D backward passes per
evaluation; for tests and small d).

Images are scored in bits/dim on uniformly dequantised data, as score_sde's evaluation does:
u = (k + U) / 256 with k the uint8 value and U ~ U[0, 1), mapped to model space x = a u + b
(a = 2, b = -1 when data are centred to [-1, 1]). The change of variables from k + U to x adds
log2(256 / a) bits per dimension, which is score_sde's ``offset = 7 - inverse_scaler(-1)``.

The ODE is solved in torch (torchdiffeq) on the device of ``x``; nothing goes through NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from .rng import GeneratorLike, rand, randn
from .sde import SDE, ScoreFn

ESTIMATORS = ("rademacher", "gaussian", "exact")
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


@dataclass
class LikelihoodResult:
    """``logp``: log p_eps(x) in nats, ``(B,)``; ``prior_logp`` + ``delta_logp`` = ``logp``;
    ``z``: the ODE's end point x(T), shape of x; ``nfe``: score evaluations (batched calls)."""

    logp: torch.Tensor
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor
    z: torch.Tensor
    nfe: int


@dataclass
class BitsPerDim:
    """``bpd``: negative log-likelihood of the dequantised images in bits/dim, ``(B,)``."""

    bpd: torch.Tensor
    nfe: int
    likelihood: LikelihoodResult


def hutchinson_noise(
    x: torch.Tensor, estimator: str, generator: GeneratorLike = None
) -> torch.Tensor | None:
    """Probe vectors v with E[v v^T] = I, shape of ``x`` (``None`` for the exact trace)."""
    if estimator == "gaussian":
        return randn(x.shape, generator, device=x.device, dtype=x.dtype)
    if estimator == "rademacher":
        u = rand(x.shape, generator, device=x.device, dtype=x.dtype)
        return torch.where(u < 0.5, -torch.ones_like(u), torch.ones_like(u))
    return None


def divergence(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(x), div fn(x))`` with the divergence ``(B,)``: v^T J v if ``v`` is given, else tr J.

    ``fn`` must act per sample (row b of the output depends only on row b of the input).
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        if v is not None:
            (vjp,) = torch.autograd.grad(out, x, grad_outputs=v)
            return out.detach(), (vjp * v).flatten(1).sum(1)
        flat = out.flatten(1)
        trace = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for i in range(flat.shape[1]):
            (row,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
            trace = trace + row.flatten(1)[:, i]
        return out.detach(), trace


def _check_options(estimator: str, method: str, steps: int | None, eps: float, T: float) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: unknown {estimator!r}; choose one of {ESTIMATORS}")
    if method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
        raise ValueError(
            f"method: unknown ODE solver {method!r}; choose one of {FIXED_STEP_METHODS + ADAPTIVE_METHODS}"
        )
    if method in FIXED_STEP_METHODS and (steps is None or int(steps) < 1):
        raise ValueError(f"steps: the fixed-step solver {method!r} needs steps >= 1, got {steps}")
    if not 0 <= eps < T:
        raise ValueError(f"eps: the start time must satisfy 0 <= eps < T = {T}, got {eps}")


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    *,
    estimator: str = "rademacher",  # Hutchinson probe: rademacher | gaussian | exact trace
    eps: float = 1e-5,              # start time (score_sde's likelihood eps)
    method: str = "dopri5",         # torchdiffeq solver; score_sde uses RK45
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,       # number of steps for fixed-step methods
    generator: GeneratorLike = None,
) -> LikelihoodResult:
    """log p_eps(x) in nats for data ``x`` of shape ``(B, ...)`` in model space.

    ``generator`` draws the probe vectors (see :mod:`sgm_lightning.rng`: a list of per-sample
    seeds makes each sample's probe independent of its batch; an adaptive solver still picks
    one step sequence for the whole batch).
    """
    _check_options(estimator, method, steps, eps, sde.T)
    B = x.shape[0]
    v = hutchinson_noise(x, estimator, generator)
    nfe = 0

    def rhs(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        nonlocal nfe
        nfe += 1
        xt = state[0]
        vec_t = torch.full((B,), float(t), device=xt.device, dtype=xt.dtype)
        drift, div = divergence(lambda y: sde.probability_flow_drift(score_fn, y, vec_t), xt, v)
        return drift, div

    times = torch.tensor([eps, sde.T], device=x.device, dtype=x.dtype)
    options = None
    if method in FIXED_STEP_METHODS:
        options = {"step_size": (sde.T - eps) / int(steps)}
    state0 = (x.detach(), torch.zeros(B, device=x.device, dtype=x.dtype))
    with torch.no_grad():
        xs, deltas = odeint(rhs, state0, times, rtol=rtol, atol=atol, method=method, options=options)
    z, delta_logp = xs[-1], deltas[-1]
    prior_logp = sde.prior_logp(z)
    return LikelihoodResult(prior_logp + delta_logp, prior_logp, delta_logp, z, nfe)


def dequantize(images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
    """Uniform dequantisation of uint8 images: (k + U) / 256 in [0, 1), float32, same shape."""
    if images.dtype != torch.uint8:
        raise ValueError(f"images: expected uint8 pixel values, got dtype {images.dtype}")
    u = rand(images.shape, generator, device=images.device, dtype=torch.float32)
    return (images.float() + u) / 256.0


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    images: torch.Tensor,
    *,
    centered: bool,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> BitsPerDim:
    """Negative log-likelihood in bits/dim of uint8 ``images`` ``(B, C, H, W)``.

    Dequantises (:func:`dequantize`), maps to model space ([-1, 1] if ``centered`` else [0, 1]),
    runs :func:`log_likelihood` (``options`` go there) and converts nats on the model scale to
    bits on the 0..256 pixel scale: bpd = -logp / (D ln 2) + log2(256 / a).

    ``generator`` is used for the dequantisation noise and then the Hutchinson probes.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        from .rng import as_generator

        generator = as_generator(generator, images.shape[0])
    u = dequantize(images, generator)
    a = 2.0 if centered else 1.0
    x = (a * u - (1.0 if centered else 0.0)).to(dtype)
    res = log_likelihood(sde, score_fn, x, generator=generator, **options)
    D = x[0].numel()
    bpd = -res.logp / (D * math.log(2.0)) + math.log2(256.0 / a)
    return BitsPerDim(bpd, res.nfe, res)
