"""Noise sources that make stochastic sampling reproducible per sample.

Every sampler takes ``generator=``, which may be

* ``None``: the global torch RNG;
* one ``torch.Generator``: a single stream for the whole batch (fast, but sample k then
  depends on the batch it ran in);
* a sequence of generators or integer seeds, one per sample: sample k's noise depends only
  on its own seed, so it is bitwise identical whatever batch or device count it ran with.

Per-sample noise is drawn on each generator's own device (CPU for seeds) and then moved,
so the bits do not depend on where the score network runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GeneratorLike = torch.Generator | Sequence[torch.Generator | int] | None


def as_generator(generator: GeneratorLike, batch: int | None = None) -> GeneratorLike:
    """Normalise ``generator``: integer seeds become CPU generators; a list is length-checked."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, str)):
        raise ValueError(
            "generator: pass a torch.Generator or a list of per-sample seeds/generators, "
            f"not {type(generator).__name__}"
        )
    gens = [g if isinstance(g, torch.Generator) else seeded(int(g)) for g in generator]
    if batch is not None and len(gens) != batch:
        raise ValueError(
            f"generator: got {len(gens)} per-sample generators for a batch of {batch}; "
            "pass exactly one seed or generator per sample"
        )
    return gens


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


#: seeds and sample indices are integers in [0, SEED_LIMIT)
SEED_LIMIT = 2**63


def _check_seed(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or not 0 <= int(value) < SEED_LIMIT:
        raise ValueError(f"{name}: must be an integer in [0, 2**63), got {value!r}")
    return int(value)


def stream_seed(seed: int, stream: int, offset: int = 0) -> int:
    """The seed of stream ``stream`` of run ``seed`` (a training rank, a lab sub-experiment),
    plus ``offset`` (the training step): (seed * 1_000_003 + 7919 * stream + offset) mod 2^63 - 1.
    Trained models and lab results depend on these exact numbers."""
    return (int(seed) * 1_000_003 + 7919 * int(stream) + int(offset)) % (2**63 - 1)


def sample_seed(seed: int, k: int) -> int:
    """The 64-bit seed of sample ``k`` of run ``seed``: NumPy's SeedSequence hash of the pair
    ``(seed, k)``, so distinct pairs give unrelated streams (no ``seed * M + k`` collisions)."""
    import numpy as np

    words = np.random.SeedSequence((_check_seed("seed", seed), _check_seed("sample index", k))).generate_state(2)
    return int(words[0]) | (int(words[1]) << 32)


def sample_generators(seed: int, indices: Sequence[int] | torch.Tensor) -> list[torch.Generator]:
    """One generator per global sample index: image k depends only on ``(seed, k)``
    (:func:`sample_seed`); ``seed`` and ``k`` are integers in [0, 2**63)."""
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    return [seeded(sample_seed(seed, k)) for k in indices]


def _draw(draw, shape, generator, device, dtype) -> torch.Tensor:
    """Call ``draw`` (torch.randn or torch.rand) with the generator conventions of this module."""
    shape = tuple(shape)
    if generator is None:
        return draw(shape, device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        return draw(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    gens = as_generator(generator, shape[0])
    return torch.stack([draw(shape[1:], generator=g, device=g.device, dtype=dtype) for g in gens]).to(device)


def randn(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` (leading dim = batch) from ``generator``."""
    return _draw(torch.randn, shape, generator, device, dtype)


def randn_like(x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def rand(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Uniform [0, 1) noise, with the same generator conventions as :func:`randn`."""
    return _draw(torch.rand, shape, generator, device, dtype)
