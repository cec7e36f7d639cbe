"""NCSNv2 noise design: techniques 1, 2 and 4 reproduce the released configs."""

import math

import numpy as np
import pytest
import torch

from sgm_lightning.noise_design import (
    ald_step_size,
    ald_variance_ratio,
    level_ratio,
    max_pairwise_distance,
    num_noise_levels,
)

CIFAR_SIGMAS = np.geomspace(50.0, 0.01, 232)


def test_technique4_cifar10_step_size_is_6_2e_6():
    eps = ald_step_size(CIFAR_SIGMAS, 5)
    assert eps == pytest.approx(6.2e-6, rel=0.01)  # released ncsnv2 cifar10 step_lr
    # it is the argmin of the Prop. 3 ratio, which never reaches 1
    r = ald_variance_ratio(eps, CIFAR_SIGMAS, 5)
    assert 1.0 < r < 1.06
    grid = np.geomspace(1e-9, 9.9e-5, 2000)
    ratios = ald_variance_ratio(grid, CIFAR_SIGMAS, 5)
    assert np.all(ratios > 1) and ratios.min() >= r - 1e-12
    assert ald_variance_ratio(eps * 1.1, CIFAR_SIGMAS, 5) > r
    assert ald_variance_ratio(eps / 1.1, CIFAR_SIGMAS, 5) > r


def test_technique4_ffhq_step_size_is_9e_7():
    """FFHQ: sigma 348 -> 0.01 over L = 2311 levels with T = 3: released step_lr 9e-7."""
    assert ald_step_size(np.geomspace(348.0, 0.01, 2311), 3) == pytest.approx(9e-7, rel=0.02)


def test_prop3_closed_form_matches_simulation():
    """One data point at 0: T ALD steps from N(0, sigma_{i-1}^2) leave the predicted variance."""
    sigmas = np.geomspace(1.0, 0.1, 6)
    eps, T = 2e-3, 4
    g = torch.Generator().manual_seed(0)
    s_prev, s_i, s_L = sigmas[1], sigmas[2], sigmas[-1]
    x = s_prev * torch.randn(400_000, generator=g, dtype=torch.float64)
    alpha = eps * s_i**2 / s_L**2
    for _ in range(T):
        x = x + alpha * (-x / s_i**2) + math.sqrt(2 * alpha) * torch.randn(x.shape, generator=g, dtype=x.dtype)
    predicted = ald_variance_ratio(eps, sigmas, T)
    assert x.var().item() / s_i**2 == pytest.approx(predicted, rel=0.01)


def test_technique2_cifar10_ratio_about_1_04():
    gamma = level_ratio(3072)
    assert gamma == pytest.approx(1.04, abs=0.001)
    c = math.sqrt(2 * 3072) * (gamma - 1)
    from scipy.special import ndtr

    assert ndtr(c + 3 * gamma) - ndtr(c - 3 * gamma) == pytest.approx(0.5, abs=1e-10)
    L = num_noise_levels(50.0, 0.01, 3072)
    assert L == 220  # released config uses 232 levels (ratio 1.0376, slightly finer)
    # L is the fewest geometric levels whose ratio does not exceed gamma
    assert (50 / 0.01) ** (1 / (L - 1)) <= gamma < (50 / 0.01) ** (1 / (L - 2))


def test_technique2_has_no_root_in_tiny_dimension():
    with pytest.raises(ValueError, match="dim"):
        level_ratio(4)
    assert level_ratio(5) > 1


def test_technique1_max_pairwise_distance():
    data = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0], [1.0, 1.0]])
    assert max_pairwise_distance(data) == pytest.approx(3 * math.sqrt(2))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 2, 4, 4, generator=g, dtype=torch.float64)
    brute = torch.cdist(x.flatten(1), x.flatten(1)).max().item()
    assert max_pairwise_distance(x, chunk=7) == pytest.approx(brute, rel=1e-10)
    assert max_pairwise_distance(x.numpy()) == pytest.approx(brute, rel=1e-10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="step_lr"):
        ald_variance_ratio(1.0, CIFAR_SIGMAS, 5)
    with pytest.raises(ValueError, match="n_steps_each"):
        ald_step_size(CIFAR_SIGMAS, 0)
    with pytest.raises(ValueError, match="sigmas"):
        ald_step_size([1.0, 0.5, 0.1], 5)
    with pytest.raises(ValueError, match="sigma_min"):
        num_noise_levels(0.01, 50.0, 3072)
    with pytest.raises(ValueError, match="data"):
        max_pairwise_distance(torch.zeros(1, 3))
