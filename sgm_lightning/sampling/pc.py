"""Predictor-corrector sampling (Song et al. 2021, Alg. 1; LLT22 Alg. 2).

On the grid T = t_0 > t_1 > ... > t_n = eps, step i runs the predictor from t_i to t_{i+1}
and then ``corrector_steps`` corrector steps at t_{i+1}: the predictor moves the law between
levels, the corrector pulls it back towards p_{t_{i+1}} (the paper's order; score_sde's code
runs the corrector first). ``denoise`` ends with Tweedie's step at eps.
NFE = n [predictor != none] + n * corrector_steps [corrector != none] + denoise.
"""

from __future__ import annotations

import torch

from ..rng import GeneratorLike
from ..sde import SDE, ScoreFn
from .base import (
    Callback,
    SampleResult,
    check_choice,
    check_int,
    check_number,
    check_time_range,
    noise,
    start,
    time_grid,
    tweedie_denoise,
)
from .correctors import CORRECTORS, NORMS
from .predictors import PREDICTORS


def pc_sample(sde: SDE, score_fn: ScoreFn, shape=None, *, predictor: str = "reverse_diffusion",
              corrector: str = "langevin", snr: float = 0.16, corrector_steps: int = 1,
              steps: int | None = None, denoise: bool = True, norms: str = "batch",
              eps: float | None = None, t_start: float | None = None, x_init: torch.Tensor | None = None,
              generator: GeneratorLike = None, callback: Callback = None, device=None,
              dtype=torch.float32) -> SampleResult:
    """PC sampler; ``steps`` predictor steps (default ``sde.N``) from ``t_start`` (default T) to
    ``eps`` (default ``sde.eps``), starting from ``x_init`` or the prior.

    ``predictor``: euler_maruyama | reverse_diffusion | ancestral | exponential | none;
    ``corrector``: langevin | ald | none; ``snr`` the corrector's signal-to-noise ratio r;
    ``norms``: batch | sample (see :mod:`.correctors`). ``callback(i, t, x)`` after each step.
    """
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    check_choice("norms", norms, NORMS)
    if predictor == "none" and corrector == "none":
        raise ValueError("predictor, corrector: at least one of them must not be 'none'")
    snr = check_number("snr", snr)
    corrector_steps = check_int("corrector_steps", corrector_steps, 0)
    steps = check_int("steps", sde.N if steps is None else steps, 1)
    t_start, eps = check_time_range(sde, t_start, eps)
    x, gen, score = start(sde, score_fn, shape, x_init, generator, device, dtype)

    predict = None if predictor == "none" else PREDICTORS[predictor]
    correct = None if corrector == "none" or corrector_steps == 0 else CORRECTORS[corrector]
    tv = time_grid(t_start, eps, steps, x.shape[0], x)
    for i in range(steps):
        if predict is not None:
            x, _ = predict(sde, score, x, tv[i], tv[i + 1], noise(x, gen))
        if correct is not None:
            for _ in range(corrector_steps):
                x, _ = correct(sde, score, x, tv[i + 1], noise(x, gen), snr=snr, norms=norms)
        if callback is not None:
            callback(i, tv[i + 1], x)
    if denoise:
        x = tweedie_denoise(sde, score, x, tv[-1])
    return SampleResult(x, score.nfe)
