"""Per-sample noise: sample k's noise depends only on its own seed."""

import pytest
import torch

from sgm_lightning.rng import rand, randn, sample_generators


def test_per_sample_seeds_do_not_depend_on_the_batch():
    all8 = randn((8, 3, 4), sample_generators(7, range(8)))
    parts = [randn((3, 3, 4), sample_generators(7, range(0, 3))),
             randn((3, 3, 4), sample_generators(7, range(3, 6))),
             randn((2, 3, 4), sample_generators(7, range(6, 8)))]
    assert torch.equal(all8, torch.cat(parts))
    single = torch.cat([randn((1, 3, 4), sample_generators(7, [k])) for k in range(8)])
    assert torch.equal(all8, single)
    # distinct indices and distinct run seeds give distinct streams
    assert not torch.equal(all8[0], all8[1])
    assert not torch.equal(all8, randn((8, 3, 4), sample_generators(8, range(8))))


def test_integer_seeds_and_uniform_draws():
    a = rand((2, 5), [1, 2], dtype=torch.float64)
    b = rand((2, 5), [1, 2], dtype=torch.float64)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < 1
    z = randn((20000,), torch.Generator().manual_seed(0))
    assert abs(z.mean().item()) < 0.03 and abs(z.std().item() - 1) < 0.03


def test_wrong_generator_count_is_an_error():
    with pytest.raises(ValueError, match="generator"):
        randn((3, 2), [1, 2])


def test_per_sample_seeds_do_not_collide_across_runs_and_reject_out_of_range_seeds():
    import pytest

    from sgm_lightning.rng import sample_seed

    # the old seed * 1_000_003 + k made these two the same stream
    a = randn((1, 16), sample_generators(5, [1_000_003]))
    b = randn((1, 16), sample_generators(6, [0]))
    assert not torch.equal(a, b)
    seeds = {sample_seed(s, k) for s in range(40) for k in range(0, 4_000_000, 100_003)}
    assert len(seeds) == 40 * 40
    top = 2**63 - 1
    assert sample_seed(top, 0) != sample_seed(top - 1, 0)
    for bad in (2**63, 2**70, -1):
        with pytest.raises(ValueError, match=r"must be an integer in \[0, 2\*\*63\)"):
            sample_generators(bad, [0])
