"""Predictor-corrector sampling (Song et al. 2021, Alg. 1; LLT22 Alg. 2).

On the grid T = t_0 > t_1 > ... > t_n = eps, step i runs the predictor from t_i to t_{i+1}
and then ``corrector_steps`` corrector steps at t_{i+1}: the predictor moves the law between
levels, the corrector pulls it back towards p_{t_{i+1}} (the paper's order; score_sde's code
runs the corrector first). ``denoise`` ends with Tweedie's step at eps.
NFE = n [predictor != none] + n * corrector_steps [corrector != none] + denoise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..rng import GeneratorLike
from ..sde import SDE, ScoreFn
from .base import (
    Callback,
    SampleResult,
    check_choice,
    check_int,
    check_number,
    GRIDS,
    check_time_range,
    noise,
    report,
    start,
    time_grid,
    tweedie_denoise,
    without_autograd,
)
from .correctors import CORRECTORS, NORMS, ald_coeffs, corrector_alpha, langevin_update
from .predictors import AFFINE_COEFFS, PREDICTORS, affine_update

#: ``project(x, t, z) -> x``, see :func:`pc_sample`
Projection = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None


@without_autograd
def pc_sample(sde: SDE, score_fn: ScoreFn, shape=None, *, predictor: str = "reverse_diffusion",
              corrector: str = "langevin", snr: float = 0.16, corrector_steps: int = 1,
              steps: int | None = None, denoise: bool = True, norms: str = "batch",
              eps: float | None = None, t_start: float | None = None, x_init: torch.Tensor | None = None,
              generator: GeneratorLike = None, callback: Callback = None, grid: str = "uniform",
              project: Projection = None, device=None, dtype=torch.float32) -> SampleResult:
    """PC sampler; ``steps`` predictor steps (default ``sde.N``) from ``t_start`` (default T) to
    ``eps`` (default ``sde.eps``), starting from ``x_init`` or the prior.

    ``predictor``: euler_maruyama | reverse_diffusion | ancestral | exponential | none;
    ``corrector``: langevin | ald | none; ``snr`` the corrector's signal-to-noise ratio r;
    ``norms``: batch | sample (see :mod:`.correctors`). ``grid``: uniform | log_sigma
    (:func:`.base.time_grid`). ``callback(step)`` after each step (:class:`.base.SamplerStep`).

    ``project(x, t, z) -> x``: applied to the start state and after every predictor and corrector
    step, with the time ``t`` ``(B,)`` the state is at and fresh standard normal noise ``z`` from
    the sampler's own per-sample streams (conditional sampling redraws the known part with it,
    :mod:`sgm_lightning.controllable`). Its noise draws follow the step's own.
    """
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    check_choice("norms", norms, NORMS)
    check_choice("grid", grid, GRIDS)
    snr = check_number("snr", snr)
    corrector_steps = check_int("corrector_steps", corrector_steps, 0)
    if predictor == "none" and (corrector == "none" or corrector_steps == 0):
        raise ValueError("predictor, corrector: with predictor 'none' the corrector must run "
                         "(a corrector other than 'none' and corrector_steps >= 1)")
    steps = check_int("steps", sde.N if steps is None else steps, 1)
    t_start, eps = check_time_range(sde, t_start, eps)
    x, gen, score = start(sde, score_fn, shape, x_init, generator, device, dtype)

    tv = time_grid(t_start, eps, steps, x.shape[0], x, grid, sde)
    step_p, step_c = _plan(sde, predictor, corrector, corrector_steps, snr, norms, tv, x)
    if project is not None:
        x = project(x, tv[0], noise(x, gen))
    for i in range(steps):
        if step_p is not None:
            x = step_p(score, x, tv[i], tv[i + 1], noise(x, gen), i)
            if project is not None:
                x = project(x, tv[i + 1], noise(x, gen))
        for _ in range(corrector_steps if step_c is not None else 0):
            x = step_c(score, x, tv[i + 1], noise(x, gen), i)
            if project is not None:
                x = project(x, tv[i + 1], noise(x, gen))
        report(callback, i, x, tv[i + 1], sde=sde, score_fn=score)
    if denoise:
        x = tweedie_denoise(sde, score, x, tv[-1])
    return SampleResult(x, score.nfe)


def _plan(sde, predictor, corrector, corrector_steps, snr, norms, tv, like):
    """Per-step closures ``(score, x, t, [t_next,] z, i) -> x`` with every coefficient that depends
    only on the grid precomputed for all steps at once (shape ``(steps, B, 1, ...)``)."""
    steps, B, tail = tv.shape[0] - 1, like.shape[0], (1,) * (like.ndim - 1)
    shaped = lambda c: c.reshape(steps, B, *tail)  # noqa: E731
    step_p = step_c = None
    if predictor in AFFINE_COEFFS:
        keep, coef, nscale = (shaped(c) for c in AFFINE_COEFFS[predictor](sde, tv[:-1], tv[1:]))
        keep = None if bool(torch.all(keep == 1)) else keep  # VE reverse diffusion: x stays as is

        def step_p(score, x, t, t_next, z, i):
            return affine_update(score, x, t, z, None if keep is None else keep[i], coef[i], nscale[i])[0]
    elif predictor != "none":
        fn = PREDICTORS[predictor]

        def step_p(score, x, t, t_next, z, i):
            return fn(sde, score, x, t, t_next, z)[0]

    if corrector == "langevin" and corrector_steps > 0:
        sqrt_alpha = shaped(corrector_alpha(sde, tv[1:]).sqrt())

        def step_c(score, x, t, z, i):
            return langevin_update(score, x, t, z, sqrt_alpha[i], snr, norms)[0]
    elif corrector == "ald" and corrector_steps > 0:
        step, nscale_c = (shaped(c) for c in ald_coeffs(sde, tv[1:], snr))

        def step_c(score, x, t, z, i):
            return torch.addcmul(torch.addcmul(x, step[i], score(x, t)), nscale_c[i], z)
    return step_p, step_c
