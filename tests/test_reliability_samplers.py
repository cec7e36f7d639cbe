"""Samplers and image conversion never turn NaN into a silent result."""

from __future__ import annotations

import warnings

import pytest
import torch

from sgm_lightning.images import to_uint8
from sgm_lightning.sampling import annealed_langevin, pc_sample
from sgm_lightning.sde import VESDE


def gaussian_score(sde):
    def score(x, t):
        return -x / (1.0 + sde.marginal_coeffs(t)[1][:, None] ** 2)
    return score


@pytest.mark.parametrize("sampler", [pc_sample, annealed_langevin])
def test_bad_start_states_and_dtypes_are_value_errors(sampler):
    sde = VESDE(sigma_min=0.01, sigma_max=5.0, N=10)
    opts = {"steps": 3} if sampler is pc_sample else {"n_steps_each": 1, "step_lr": 1e-3}
    x = torch.zeros(4, 2)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x_init: 1 of 4 start states hold NaN"):
        sampler(sde, gaussian_score(sde), x_init=x, **opts)
    with pytest.raises(ValueError, match=r"x_init: expected a floating-point tensor, got torch.int64"):
        sampler(sde, gaussian_score(sde), x_init=torch.zeros(4, 2, dtype=torch.long), **opts)
    with pytest.raises(ValueError, match=r"x_init: a 'meta' tensor"):
        sampler(sde, gaussian_score(sde), x_init=torch.zeros(4, 2, device="meta"), **opts)
    with pytest.raises(ValueError, match=r"dtype: samplers work in a floating-point dtype"):
        sampler(sde, gaussian_score(sde), (4, 2), dtype=torch.int32, **opts)
    with pytest.raises(ValueError, match=r"device: 'meta'"):
        sampler(sde, gaussian_score(sde), (4, 2), device="meta", **opts)


def test_a_score_that_is_nan_from_the_start_is_an_error():
    sde = VESDE(sigma_min=0.01, sigma_max=5.0, N=10)
    with pytest.raises(ValueError, match=r"score_fn: returned NaN or inf at its first call"):
        pc_sample(sde, lambda x, t: torch.full_like(x, float("nan")), (3, 2), steps=3)


def test_one_row_gone_nan_warns_and_does_not_poison_the_batch():
    sde = VESDE(sigma_min=0.01, sigma_max=5.0, N=10)
    calls = {"n": 0}

    def score(x, t):
        calls["n"] += 1
        s = gaussian_score(sde)(x, t)
        if calls["n"] == 3:  # the model breaks on sample 1 half-way
            s = s.clone()
            s[1] = float("nan")
        return s

    g = torch.Generator().manual_seed(0)
    with pytest.warns(RuntimeWarning, match=r"sampler: 1 of 4 samples hold NaN or inf"):
        res = pc_sample(sde, score, (4, 2), steps=4, norms="batch", generator=g)
    finite = torch.isfinite(res.x).all(1)
    assert finite.tolist() == [True, False, True, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy run gives no warning
        pc_sample(sde, gaussian_score(sde), (4, 2), steps=4, generator=g)


def test_to_uint8_refuses_non_finite_images():
    x = torch.zeros(3, 1, 4, 4)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"x: 1 of 3 images hold NaN or inf values \(e.g. image 1\)"):
        to_uint8(x, centered=True)
    x[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        to_uint8(x, centered=False)
    assert to_uint8(torch.full((1, 1, 2, 2), 2.0), centered=False).unique().tolist() == [255]  # finite: clipped


def test_plain_langevin_refuses_bad_start_states():
    from sgm_lightning.sampling import langevin

    with pytest.raises(ValueError, match="x0: the start states hold NaN or inf"):
        langevin(lambda x: -x, torch.tensor([[0.0, float("inf")]]), step_size=0.1, n_steps=2)
    with pytest.raises(ValueError, match="x0: expected a floating-point tensor with values, got torch.int64"):
        langevin(lambda x: -x, torch.zeros(2, 2, dtype=torch.long), step_size=0.1, n_steps=2)
