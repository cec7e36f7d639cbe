"""DSM losses: on Gaussian data the exact score attains the known minimum (Tweedie), anything else is worse."""

from __future__ import annotations

import math

import pytest
import torch

from sgm_lightning.losses import discrete_dsm_loss, dsm_loss
from sgm_lightning.nets import noise_labels
from sgm_lightning.sde import OUSDE, VESDE, VPSDE, SubVPSDE, bcast

S0 = 0.7  # data ~ N(0, S0^2 I)


def gaussian_score(sde):
    """Exact score of p_t = N(0, (s^2 S0^2 + std^2) I)."""

    def score(x, t):
        s, std = sde.marginal_coeffs(t)
        return -x / bcast(s**2 * S0**2 + std**2, x)

    return score


def draws(n=100_000, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return S0 * torch.randn(n, d, generator=g, dtype=torch.float64), g


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0), VPSDE(), SubVPSDE(), OUSDE(T=3.0)], ids=repr)
def test_exact_score_attains_tweedie_minimum(sde):
    """With lambda = std^2: E||std s* + z||^2 / d = a^2 S0^2 / (a^2 S0^2 + std^2) per dimension."""
    x0, g = draws()
    t = torch.full((x0.shape[0],), 0.37, dtype=torch.float64) * sde.T
    losses, _ = dsm_loss(gaussian_score(sde), sde, x0, t=t, generator=g)
    a, std = (c[0].item() for c in sde.marginal_coeffs(t[:1]))
    expect = a**2 * S0**2 / (a**2 * S0**2 + std**2)
    # losses are (chi^2_4 mixtures)/4 with variance < 2/4 expect^2: 5 standard errors
    assert losses.mean().item() == pytest.approx(expect, abs=5 * expect * math.sqrt(0.5 / x0.shape[0]))
    # likelihood weighting is the same residual times g^2 / std^2
    lw, _ = dsm_loss(gaussian_score(sde), sde, x0, t=t, generator=torch.Generator().manual_seed(123),
                     weighting="likelihood")
    g2 = sde.sde(x0[:1], t[:1])[1].item() ** 2
    assert lw.mean().item() == pytest.approx(expect * g2 / std**2, rel=0.02)


def test_exact_score_is_the_minimiser_and_excess_is_the_score_error():
    """L(s) - L(s*) = E[std^2 ||s - s*||^2] / d; with common noise the identity holds to MC error."""
    sde = VESDE(0.01, 10.0)
    x0, _ = draws(200_000, 2, seed=1)
    exact = gaussian_score(sde)
    base, _ = dsm_loss(exact, sde, x0, generator=torch.Generator().manual_seed(5))
    for c in (0.9, 1.1):
        worse, t = dsm_loss(lambda x, t, c=c: c * exact(x, t), sde, x0, generator=torch.Generator().manual_seed(5))
        # std^2 (c - 1)^2 ||s*||^2 / d = (c-1)^2 std^2 / (S0^2 + std^2) in expectation over x_t
        std2 = sde.marginal_coeffs(t)[1] ** 2
        excess = ((c - 1) ** 2 * std2 / (S0**2 + std2)).mean().item()
        assert worse.mean().item() > base.mean().item()
        assert worse.mean().item() - base.mean().item() == pytest.approx(excess, rel=0.03)
    s_mean = dsm_loss(exact, sde, x0, generator=torch.Generator().manual_seed(5), reduce="sum")[0]
    assert torch.allclose(s_mean, base * x0.shape[1] / 2)  # sum = 0.5 * sum over dims


def test_discrete_ncsn_levels():
    """Discrete VE levels: the loss at the exact score is std^p * d/2 * S0^2/(S0^2 + sigma_i^2) per level."""
    sde = VESDE(0.1, 5.0, N=4)
    x0, g = draws(40_000, 3, seed=2)
    levels = torch.arange(4).repeat_interleave(10_000)

    def score_discrete(x, t):  # the network would receive noise_labels(sde, t, continuous=False)
        i = sde.N - 1 - noise_labels(sde, t, continuous=False)  # back to the ascending index
        sig2 = sde.discrete_sigmas.double()[i] ** 2
        return -x / bcast(S0**2 + sig2, x)

    losses, t = discrete_dsm_loss(score_discrete, sde, x0, levels=levels, generator=g, anneal_power=2.0)
    for i in range(4):
        sig = sde.discrete_sigmas[i].item()
        expect = 1.5 * S0**2 / (S0**2 + sig**2)  # 0.5 * d * ...
        assert losses[levels == i].mean().item() == pytest.approx(expect, rel=0.03)
    assert torch.allclose(sde.sigma(t[::10_000]).float(), sde.discrete_sigmas, rtol=1e-5)
    with pytest.raises(ValueError, match="sde"):
        discrete_dsm_loss(score_discrete, OUSDE(), x0[:4])
