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

from .base import CountedScore, SampleResult, tweedie_denoise
from .correctors import CORRECTORS, ald_corrector_step, langevin_corrector_step
from .dpm_solver import dpm_solver_2m
from .draw import draw_samples
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
from .registry import SAMPLERS, run_sampler, sampler_options
from .settings import sampler_settings

__all__ = [
    "SAMPLERS", "run_sampler", "sampler_options", "sampler_settings", "draw_samples", "SampleResult",
    "CountedScore", "tweedie_denoise",
    "langevin", "annealed_langevin", "pc_sample", "ode_sample", "edm_sample", "edm_heun",
    "edm_stochastic", "dpm_solver_2m", "karras_sigmas", "PREDICTORS", "CORRECTORS", "ODE_METHODS",
    "euler_maruyama_step", "reverse_diffusion_step", "ancestral_step", "exponential_step",
    "langevin_corrector_step", "ald_corrector_step", "affine_update", "reverse_diffusion_coeffs",
    "ancestral_coeffs", "exponential_coeffs",
]
