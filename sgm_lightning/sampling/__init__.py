"""Samplers for score-based models; every one works on any ``score_fn(x, t)``.

    from sgm_lightning.sampling import run_sampler, SAMPLERS
    res = run_sampler("pc", sde, score_fn, (B, d), generator=seeds, steps=500, snr=0.16)
    res.x, res.nfe

Names: ``ald`` (:func:`annealed_langevin`), ``pc`` (:func:`pc_sample`), ``ode``
(:func:`ode_sample`), ``edm_heun``, ``edm_stochastic``, ``dpm_solver_2m``; plain
:func:`langevin` on a fixed target. Step functions for custom loops (inpainting etc.):
:mod:`.predictors` ``(sde, score_fn, x, t, t_next, z) -> (x, x_mean)`` and :mod:`.correctors`
``(sde, score_fn, x, t, z, *, snr, norms) -> (x, x_mean)``.
"""

from __future__ import annotations

import inspect

from .base import CountedScore, SampleResult, tweedie_denoise
from .correctors import CORRECTORS, ald_corrector_step, langevin_corrector_step
from .dpm_solver import dpm_solver_2m
from .edm import edm_heun, edm_sample, edm_stochastic, karras_sigmas
from .langevin import annealed_langevin, langevin
from .ode import METHODS as ODE_METHODS
from .ode import ode_sample
from .pc import pc_sample
from .predictors import (
    PREDICTORS,
    affine_update,
    ancestral_coeffs,
    ancestral_step,
    euler_maruyama_step,
    exponential_coeffs,
    exponential_step,
    reverse_diffusion_coeffs,
    reverse_diffusion_step,
)

SAMPLERS = {
    "ald": annealed_langevin,
    "pc": pc_sample,
    "ode": ode_sample,
    "edm_heun": edm_heun,
    "edm_stochastic": edm_stochastic,
    "dpm_solver_2m": dpm_solver_2m,
}

_EXTRA_OPTIONS = {"edm_heun": ("sigma_min", "sigma_max", "rho"),
                  "edm_stochastic": ("sigma_min", "sigma_max", "rho")}


def sampler_options(name: str) -> list[str]:
    """The keyword options sampler ``name`` accepts (besides sde, score_fn, shape)."""
    params = inspect.signature(SAMPLERS[name]).parameters.values()
    opts = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    return sorted(set(opts) | set(_EXTRA_OPTIONS.get(name, ()))
                  | ({"x_init", "generator", "callback", "device", "dtype"} if name.startswith("edm") else set()))


def run_sampler(name: str, sde, score_fn, shape=None, *, generator=None, **options) -> SampleResult:
    """Run sampler ``name`` (a key of :data:`SAMPLERS`); unknown names/options raise ValueError."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {name!r}; choose one of {sorted(SAMPLERS)}")
    allowed = sampler_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}: not an option of sampler {name!r}; allowed: {allowed}")
    return SAMPLERS[name](sde, score_fn, shape, generator=generator, **options)


__all__ = [
    "SAMPLERS", "run_sampler", "sampler_options", "SampleResult", "CountedScore", "tweedie_denoise",
    "langevin", "annealed_langevin", "pc_sample", "ode_sample", "edm_sample", "edm_heun",
    "edm_stochastic", "dpm_solver_2m", "karras_sigmas", "PREDICTORS", "CORRECTORS", "ODE_METHODS",
    "euler_maruyama_step", "reverse_diffusion_step", "ancestral_step", "exponential_step",
    "langevin_corrector_step", "ald_corrector_step", "affine_update", "reverse_diffusion_coeffs",
    "ancestral_coeffs", "exponential_coeffs",
]
