"""From a config's ``sample`` section to samples: the sampler settings, and per-index drawing.

Sample k gets its own generator ``rng.sample_generators(seed, [k])``, so it depends only on
the seed and its index, never on the batch or device it was drawn in.
"""

from __future__ import annotations

import torch

from ..rng import sample_generators
from .registry import SAMPLERS, run_sampler, sampler_options

#: config keys of ``sample`` that may be sampler options (passed when the sampler takes them)
OPTION_KEYS = ("predictor", "corrector", "snr", "steps", "corrector_steps", "n_steps_each", "step_lr",
               "method", "denoise", "norms")


def sampler_settings(sample_cfg, *, sampler=None, per_sample: bool = True, **overrides) -> tuple[str, dict]:
    """``(name, options)`` for :func:`sgm_lightning.sampling.run_sampler` from a ``sample`` config.

    Only the keys the chosen sampler accepts are kept; ``overrides`` that are ``None`` are
    ignored. ``per_sample``: Langevin norms per sample (``norms="sample"``), because batch
    norms couple the samples of a batch and sample k would depend on its batch.
    """
    name = sampler or sample_cfg["sampler"]
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown {name!r}; choose one of {sorted(SAMPLERS)}")
    accepted = set(sampler_options(name))
    options = {k: sample_cfg[k] for k in OPTION_KEYS if k in accepted and k in sample_cfg}
    if name == "ode":  # the config's step count is for PC; adaptive solvers choose their own steps
        from .ode import FIXED_METHODS

        if options.get("method") not in FIXED_METHODS:
            options.pop("steps", None)
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in accepted:
            raise ValueError(f"--{k}: the {name!r} sampler has no {k!r} option")
        options[k] = v
    if per_sample and "norms" in accepted:
        options["norms"] = "sample"
    options = {k: (v.item() if hasattr(v, "item") else v) for k, v in options.items()}
    return name, options


def draw_samples(score_fn, sde, shape, indices, *, seed: int, sampler: str, options: dict,
                 exact: bool = True, device=None, condition=None, callback=None):
    """Samples ``(len(indices), *shape)`` for global ``indices`` and the NFE of one sampler run.

    ``exact``: run each sample alone (bitwise independent of the batch: kernels see the same
    shapes); otherwise one batched run (same noise, agrees to float rounding).
    ``condition``: a :class:`sgm_lightning.controllable.Condition` (inpainting / colourisation).
    ``callback(i, t, x)`` sees the first sample only when ``exact``.
    """
    gens = sample_generators(seed, indices)
    groups = [[i] for i in range(len(indices))] if exact else [list(range(len(indices)))]
    xs, nfe = [], 0
    for j, group in enumerate(groups):
        g = [gens[i] for i in group]
        cb = callback if j == 0 else None
        if condition is not None:
            res = condition.sample([indices[i] for i in group], sde, score_fn, sampler, options,
                                   generator=g, device=device, callback=cb)
        else:
            res = run_sampler(sampler, sde, score_fn, (len(group), *shape), generator=g, callback=cb,
                              device=device, **options)
        xs.append(res.x)
        nfe = res.nfe
    return torch.cat(xs), nfe
