"""Forward processes: marginals against simulation, inverses, discretisations."""

import math

import pytest
import torch

from sgm_lightning.sde import OUSDE, SubVPSDE, VESDE, VPSDE, get_sde

PROCESSES = [VESDE(sigma_min=0.01, sigma_max=5.0), VPSDE(), SubVPSDE(), OUSDE(T=2.0)]


@pytest.mark.parametrize("sde", PROCESSES, ids=lambda s: type(s).__name__)
def test_marginal_matches_euler_maruyama(sde):
    """Simulate the forward SDE finely from x0 and compare mean/std with marginal_prob."""
    g = torch.Generator().manual_seed(0)
    n, steps = 10000, 800
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    x = x0.clone()
    t_end = 0.6 * sde.T
    dt = t_end / steps
    for k in range(steps):
        t = torch.full((n,), k * dt, dtype=torch.float64)
        drift, diff = sde.sde(x, t)
        x = x + drift * dt + diff[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=g, dtype=x.dtype)
    mean, std = sde.marginal_prob(x0, torch.full((n,), t_end, dtype=torch.float64))
    se = std[0].item() / math.sqrt(n)
    assert abs(x.mean().item() - mean[0, 0].item()) < 5 * se + 2e-3
    assert abs(x.std().item() / std[0].item() - 1) < 0.03


@pytest.mark.parametrize("sde", PROCESSES, ids=lambda s: type(s).__name__)
def test_sigma_inverse_and_prior(sde):
    t = torch.linspace(0.05, sde.T, 7, dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_sigma(sde.sigma(t)), t, rtol=1e-9, atol=1e-9)
    z = sde.prior_sampling((4000, 3), torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(z.std().item() / sde.prior_std - 1) < 0.03
    # prior_logp is the exact Gaussian log-density
    expected = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), expected)


def test_ve_discrete_ladder_and_smld_step():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=10)
    s = sde.discrete_sigmas
    assert s[0].item() == pytest.approx(0.01) and s[-1].item() == pytest.approx(50.0)
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (5000.0) ** (1 / 9)))
    t = torch.tensor([1.0, 0.0, 5 / 9])
    f, G = sde.discretize(torch.zeros(3, 2), t)
    assert torch.all(f == 0)
    expected = torch.stack([torch.sqrt(s[9] ** 2 - s[8] ** 2), s[0], torch.sqrt(s[5] ** 2 - s[4] ** 2)])
    torch.testing.assert_close(G, expected)


def test_vp_discretize_is_ddpm_chain():
    sde = VPSDE(N=1000)
    t = torch.tensor([0.5])
    x = torch.ones(1, 4)
    f, G = sde.discretize(x, t)
    beta = sde.discrete_betas[500]
    torch.testing.assert_close(x + f, torch.sqrt(1 - beta) * x)
    torch.testing.assert_close(G, torch.sqrt(beta)[None])


def test_ou_discretize_is_exact_transition():
    sde = OUSDE(T=5.0, N=50)
    x = torch.ones(1, 2)
    f, G = sde.discretize(x, torch.tensor([1.0]))
    assert (x + f)[0, 0].item() == pytest.approx(math.exp(-0.1))
    assert G.item() == pytest.approx(math.sqrt(1 - math.exp(-0.2)))


def test_bad_arguments_name_the_key():
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="N"):
        VPSDE(N=0)
    with pytest.raises(ValueError, match="unknown process"):
        get_sde("vx")
