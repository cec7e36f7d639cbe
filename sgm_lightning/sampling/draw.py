"""Samples for global indices, each from its own generator.

Sample k gets its own generator ``rng.sample_generators(seed, [k])``, so it depends only on
the seed and its index, never on the batch or device it was drawn in.
"""

from __future__ import annotations

import torch

from ..rng import sample_generators
from .registry import run_sampler

def draw_samples(score_fn, sde, shape, indices, *, seed: int, sampler: str, options: dict,
                 exact: bool = True, device=None, condition=None, callback=None):
    """Samples ``(len(indices), *shape)`` for global ``indices`` and the NFE of one sampler run.

    ``exact``: run each sample alone (bitwise independent of the batch: kernels see the same
    shapes); otherwise one batched run (same noise, agrees to float rounding).
    ``condition``: a :class:`sgm_lightning.controllable.Condition` (inpainting / colourisation).
    ``callback(step)`` sees the first sample only when ``exact``.
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
