"""Shared sampler plumbing: the result type, the NFE counter, argument checks, start states.

Every sampler in this package follows one convention:

    sampler(sde, score_fn, shape, *, <options>, x_init=None, generator=None, callback=None,
            device=None, dtype=torch.float32) -> SampleResult(x, nfe)

* ``score_fn(x, t)``: ``x`` ``(B, ...)``, ``t`` ``(B,)`` continuous times -> grad_x log p_t(x).
* ``generator``: ``None``, one ``torch.Generator``, or one seed/generator per sample
  (:mod:`sgm_lightning.rng`); with per-sample seeds, sample k's noise depends only on seed k.
* ``callback(step)``: called after each step with one :class:`SamplerStep` (step index, time
  and noise level reached, state, denoised estimate); the samplers never keep a trajectory.
* ``nfe``: the exact number of batched score-function calls, counted by :class:`CountedScore`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..rng import GeneratorLike, as_generator, randn
from ..sde import SDE, ScoreFn, bcast



@dataclass
class SamplerStep:
    """What every sampler reports to ``callback`` after step ``i``.

    ``t`` ``(B,)``: the time reached; ``sigma`` ``(B,)``: its noise level std(t) / s(t) (EDM's
    sigma; 0 for a clean state: the end of an EDM / DPM-Solver run, plain Langevin on a fixed
    target, where ``t`` is 0 too); ``x`` ``(B, ...)``: the state, in the process's own scaling.
    ``denoised``: the estimate E[x_0 | x_t] = (x + std^2 score) / s (Tweedie), computed on first
    access (one score call, not counted in the sampler's NFE); ``x`` itself where sigma is 0.
    """

    i: int
    t: torch.Tensor
    sigma: torch.Tensor
    x: torch.Tensor
    _denoise: Callable[[], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def denoised(self) -> torch.Tensor:
        if self._denoise is None:
            return self.x
        value = self._denoise()
        self._denoise = lambda: value
        return value


Callback = Callable[[SamplerStep], None] | None


def report(callback: Callback, i: int, x: torch.Tensor, t=None, *, sde: SDE | None = None, score_fn=None) -> None:
    """Call ``callback`` with the :class:`SamplerStep` of step ``i``: state ``x`` at time ``t``
    (``(B,)``) of ``sde``, denoised with the raw ``score_fn``; ``t=None``: a clean state (t = sigma = 0)."""
    if callback is None:
        return
    if t is None:
        zero = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        callback(SamplerStep(i, zero, zero, x))
        return
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype).reshape(-1).expand(x.shape[0])
    fn = getattr(score_fn, "fn", score_fn)  # a CountedScore's own function: the estimate is no NFE
    callback(SamplerStep(i, t, sde.sigma(t), x, lambda: tweedie_denoise(sde, fn, x, t)))


@dataclass
class SampleResult:
    """Final samples ``x`` ``(B, ...)`` and ``nfe``, the exact number of score-function calls."""

    x: torch.Tensor
    nfe: int
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:  # one check per run: NaN samples never pass silently
        if isinstance(self.x, torch.Tensor) and self.x.is_floating_point() and self.x.device.type != "meta":
            finite = torch.isfinite(self.x.reshape(self.x.shape[0], -1)).all(1) if self.x.ndim else None
            if finite is not None and not bool(finite.all()):
                bad = int((~finite).sum())
                warnings.warn(f"sampler: {bad} of {self.x.shape[0]} samples hold NaN or inf values (the score "
                              "function returned non-finite values or the steps diverged; check the model, "
                              "the step count and snr / step_lr)", RuntimeWarning, stacklevel=3)


class CountedScore:
    """Wraps a score_fn, counts its calls, and checks the first output's shape."""

    __slots__ = ("fn", "nfe", "_checked")

    def __init__(self, fn: ScoreFn):
        self.fn, self.nfe, self._checked = fn, 0, False

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        s = self.fn(x, t)
        if not self._checked:
            if s.shape != x.shape:
                raise ValueError(
                    f"shape: score_fn returned {tuple(s.shape)} for x of shape {tuple(x.shape)}; "
                    "the sample shape must match what the score function expects"
                )
            if not bool(torch.isfinite(s).all()):  # a broken model: stop before a whole run of NaN
                raise ValueError(f"score_fn: returned NaN or inf at its first call (t={float(t.reshape(-1)[0]):g}) "
                                 "for finite x; the model or its weights are broken")
            self._checked = True
        return s


# --- argument checks (all run before any work) -------------------------------------------------
def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; choose one of {sorted(choices)}")


def check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value, *, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"{name}: expected a finite number {rule}, got {value!r}")
    return float(value)


def check_shape(shape: Sequence[int], score_fn) -> tuple[int, ...]:
    """``shape`` is ``(B, ...)`` of positive ints, matching ``score_fn.dim`` when it has one."""
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape: expected a tuple of ints (B, ...), got {shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape: expected (B, ...) with B >= 1 and a non-empty sample shape, got {shape}")
    dim = getattr(score_fn, "dim", None)
    if dim is not None and math.prod(shape[1:]) != dim:
        raise ValueError(
            f"shape: samples of shape {shape[1:]} have {math.prod(shape[1:])} values but the score "
            f"function is defined on d={dim}; pass shape=(B, {dim})"
        )
    return shape


def check_time_range(sde: SDE, t_start, eps) -> tuple[float, float]:
    """``(t_start, eps)`` with defaults ``(sde.T, sde.eps)`` and 0 < eps < t_start <= T."""
    t0 = sde.T if t_start is None else float(t_start)
    t1 = sde.eps if eps is None else float(eps)
    if not 0 < t1 < t0 <= sde.T + 1e-12:
        raise ValueError(f"t_start, eps: need 0 < eps < t_start <= T={sde.T}, got t_start={t0}, eps={t1}")
    return t0, t1


# --- start states -------------------------------------------------------------------------------
def start(sde: SDE, score_fn, shape, x_init, generator: GeneratorLike, device, dtype):
    """Validate ``shape``/``x_init``; return ``(x, generator, CountedScore)``.

    ``x`` is ``x_init`` (cloned) or a prior sample N(0, prior_std^2 I); per-sample seeds are
    turned into generators once, so every later draw advances each sample's own stream.
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: samplers work in a floating-point dtype (float32, float64), got {dtype}")
    if device is not None and torch.device(device).type == "meta":
        raise ValueError("device: 'meta' tensors hold no values; sample on cpu or cuda")
    if x_init is not None:
        if not isinstance(x_init, torch.Tensor):
            raise ValueError(f"x_init: expected a tensor (B, ...), got {type(x_init).__name__}")
        if not x_init.is_floating_point():
            raise ValueError(f"x_init: expected a floating-point tensor, got {x_init.dtype}; convert it with .float()")
        if x_init.device.type == "meta":
            raise ValueError("x_init: a 'meta' tensor holds no values; pass a tensor on cpu or cuda")
        if not bool(torch.isfinite(x_init).all()):
            bad = int((~torch.isfinite(x_init.reshape(x_init.shape[0], -1)).all(1)).sum()) if x_init.ndim else 1
            raise ValueError(f"x_init: {bad} of {x_init.shape[0] if x_init.ndim else 1} start states hold NaN or inf")
        if shape is not None and tuple(shape) != tuple(x_init.shape):
            raise ValueError(f"shape, x_init: shape {tuple(shape)} differs from x_init's {tuple(x_init.shape)}")
        shape = x_init.shape
    if shape is None:
        raise ValueError("shape: pass the batch shape (B, ...) or x_init")
    shape = check_shape(shape, score_fn)
    gen = as_generator(generator, shape[0])
    if x_init is not None:
        x = x_init.detach().clone()
    else:
        x = sde.prior_sampling(shape, gen, device=device, dtype=dtype)
    return x, gen, CountedScore(score_fn)


def noise(x: torch.Tensor, generator: GeneratorLike) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` from ``generator`` (already normalised)."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


GRIDS = ("uniform", "log_sigma")


def time_grid(t_start: float, eps: float, steps: int, batch: int, like: torch.Tensor,
              grid: str = "uniform", sde: SDE | None = None) -> torch.Tensor:
    """``(steps + 1, batch)`` times from t_start down to eps (row i: the times of step i).

    ``grid="uniform"``: uniform in t (score_sde). ``"log_sigma"``: uniform in log sigma(t), the
    EDM noise level (for VE the same thing; for OU/VP it refines the steps near t = 0, where
    std(t) ~ sqrt(t) changes fastest).
    """
    if grid == "uniform":
        ts = torch.linspace(t_start, eps, steps + 1, dtype=torch.float64)
    else:
        ends = sde.sigma(torch.tensor([t_start, eps], dtype=torch.float64)).log()
        ts = sde.t_from_sigma(torch.linspace(ends[0], ends[1], steps + 1, dtype=torch.float64).exp())
        ts[0], ts[-1] = t_start, eps  # exact ends despite round-off
    return ts.to(device=like.device, dtype=like.dtype)[:, None].expand(-1, batch)


def tweedie_denoise(sde: SDE, score_fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t] = (x + std(t)^2 s(x, t)) / s(t) (Tweedie; VE: x + sigma^2 s). One NFE."""
    scale, std = sde.marginal_coeffs(t)
    return (x + bcast(std**2, x) * score_fn(x, t)) / bcast(scale, x)


def without_autograd(sampler: Callable) -> Callable:
    """Run ``sampler`` with autograd off: sampling from a network under autograd would keep every
    step's activations alive (measured, ``scripts/bench_sample_memory.py``: 1,097 MiB for 10 PC
    steps at batch 64 on the digits net, against 11 MiB). A score function that needs gradients
    inside (guidance) opens ``torch.enable_grad()`` itself; ``grad=True`` keeps autograd on for a
    caller that differentiates through the sampler. ``inspect.signature`` still shows the
    sampler's own options (``run_sampler`` validates against them)."""

    @functools.wraps(sampler)
    def run(*args, grad: bool = False, **kwargs):
        with torch.set_grad_enabled(bool(grad) and torch.is_grad_enabled()):
            return sampler(*args, **kwargs)

    return run
