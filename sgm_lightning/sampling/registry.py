"""The samplers by name: ``run_sampler(name, sde, score_fn, shape, **options)``."""

from __future__ import annotations

import inspect

from .base import SampleResult
from .dpm_solver import dpm_solver_2m
from .edm import edm_heun, edm_stochastic
from .langevin import annealed_langevin
from .ode import ode_sample
from .pc import pc_sample

SAMPLERS = {
    "ald": annealed_langevin,
    "pc": pc_sample,
    "ode": ode_sample,
    "edm_heun": edm_heun,
    "edm_stochastic": edm_stochastic,
    "dpm_solver_2m": dpm_solver_2m,
}

def sampler_options(name: str) -> list[str]:
    """The keyword options sampler ``name`` accepts (besides sde, score_fn, shape)."""
    params = inspect.signature(SAMPLERS[name]).parameters.values()
    return sorted(p.name for p in params if p.kind == p.KEYWORD_ONLY)


def run_sampler(name: str, sde, score_fn, shape=None, *, generator=None, **options) -> SampleResult:
    """Run sampler ``name`` (a key of :data:`SAMPLERS`); unknown names/options raise ValueError."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {name!r}; choose one of {sorted(SAMPLERS)}")
    allowed = sampler_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}: not an option of sampler {name!r}; allowed: {allowed}")
    return SAMPLERS[name](sde, score_fn, shape, generator=generator, **options)
