"""PC inpainting and colourisation with exact Gaussian scores: known coordinates are kept,
unknown ones are drawn from the conditional, the known part starts at the prior's noise level."""

import math

import pytest
import torch

from sgm_lightning.controllable import (
    colorize_condition,
    from_decoupled,
    grey_basis,
    inpaint_condition,
    pc_conditional,
    sample_conditional,
    to_decoupled,
)
from sgm_lightning.rng import sample_generators
from sgm_lightning.sde import VESDE, bcast

# data N(0, C) in 2-d with correlation 0.8: x2 | x1 = a  ~  N(0.8 a, 1 - 0.64)
C = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
LAM, Q = torch.linalg.eigh(C)


def gaussian_score(sde):
    def score(x, t):
        s, std = sde.marginal_coeffs(t)
        w = 1.0 / (bcast(s**2, x) * LAM + bcast(std**2, x))
        return -((x @ Q) * w) @ Q.T

    return score


def test_inpainting_keeps_known_coordinates_and_samples_the_conditional():
    sde, B, a = VESDE(sigma_min=0.01, sigma_max=10.0), 600, 1.0
    y = torch.zeros(B, 2, dtype=torch.float64)
    y[:, 0] = a
    mask = torch.zeros_like(y)
    mask[:, 0] = 1
    res = pc_conditional(sde, gaussian_score(sde), y, mask, steps=200, snr=0.16, norms="batch",
                         generator=torch.Generator().manual_seed(1))
    x = res.x
    assert torch.equal(x[:, 0], y[:, 0])  # known coordinate kept bit for bit
    mean, std = x[:, 1].mean().item(), x[:, 1].std().item()
    se = 0.6 / math.sqrt(B)
    assert abs(mean - 0.8 * a) < 3 * se + 0.02, mean  # conditional mean 0.8 (unconditional: 0)
    assert abs(std - 0.6) < 0.06, std                  # conditional std 0.6 (unconditional: 1)
    assert res.nfe == 2 * 200 + 1


def test_the_known_part_starts_at_the_prior_level():
    sde, B = VESDE(sigma_min=0.01, sigma_max=10.0), 4000
    y = torch.full((B, 2), 3.0, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(B, 2)
    seen = []

    def spy(x, t):
        seen.append((x.clone(), t.clone()))
        return gaussian_score(sde)(x, t)

    pc_conditional(sde, spy, y, mask, steps=1, corrector="none", generator=torch.Generator().manual_seed(0))
    x0, t0 = seen[0]
    assert torch.all(t0 == sde.T)
    known = x0[:, 0]  # x_known(T) = y + sigma_max z
    assert abs(known.mean().item() - 3.0) < 4 * 10 / math.sqrt(B)
    assert abs(known.std().item() - 10.0) < 0.4


def test_samples_depend_only_on_their_own_seed():
    sde = VESDE(sigma_min=0.01, sigma_max=10.0)
    y = torch.tensor([[1.0, 0.0]] * 5, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0]] * 5, dtype=torch.float64)
    opts = dict(steps=20, snr=0.16, norms="sample")
    full = pc_conditional(sde, gaussian_score(sde), y, mask, generator=sample_generators(4, range(5)), **opts)
    one = pc_conditional(sde, gaussian_score(sde), y[3:4], mask[3:4], generator=sample_generators(4, [3]), **opts)
    assert torch.allclose(full.x[3:4], one.x, rtol=0, atol=1e-12)


def test_colourisation_keeps_the_grey_level_of_every_pixel():
    T = grey_basis(3)
    assert torch.allclose(T @ T.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(T[0], torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64)
    cond = colorize_condition(grey, 3)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(from_decoupled(to_decoupled(x, T), T), x, atol=1e-12)
    # per-pixel N(0, I) data: the exact score is -x / (1 + std^2) in any orthonormal basis
    sde = VESDE(sigma_min=0.01, sigma_max=5.0)

    def score(x, t):
        return -x / bcast(1 + sde.marginal_coeffs(t)[1] ** 2, x)

    res = sample_conditional(cond, [0, 1], sde, score, "pc", {"steps": 10, "snr": 0.1, "norms": "sample"},
                             generator=sample_generators(0, [0, 1]), dtype=torch.float64)
    assert torch.allclose(res.x.mean(1, keepdim=True), grey, atol=1e-12)  # grey level kept
    assert res.x.std(1).mean() > 0.1  # and colour was added
    with pytest.raises(ValueError, match="--sampler"):
        sample_conditional(cond, [0], sde, score, "ode", {})


def test_bad_masks_are_rejected():
    imgs = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="mask"):
        inpaint_condition(imgs, torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="mask"):
        inpaint_condition(imgs, torch.ones(5, 5))
    cond = inpaint_condition(imgs + 1, torch.eye(4))
    y, m = cond.take([0, 3], "cpu", torch.float32)
    assert y.shape == m.shape == (2, 3, 4, 4) and torch.equal(y, m)
