"""Langevin dynamics and ALD against closed forms (docs/theory.md E1, E4, E6)."""

import math

import pytest
import torch

from sgm_lightning.analytic import BadSetError, BiasError, GaussianMixture
from sgm_lightning.metrics import mode_weights
from sgm_lightning.sampling import annealed_langevin, langevin, tweedie_denoise
from sgm_lightning.sde import OUSDE, VESDE


def test_lmc_stationary_variance():
    """On N(m, s^2 I), x + h s(x) + sqrt(2h) z is stationary at variance s^2 / (1 - h/(2 s^2))."""
    m, s2, h = torch.tensor([1.0, -2.0], dtype=torch.float64), 2.25, 0.5 * 2.25
    g = torch.Generator().manual_seed(0)
    x0 = m + torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    res = langevin(lambda x: -(x - m) / s2, x0, step_size=h, n_steps=60, generator=g)
    assert res.nfe == 60
    x = res.x
    expected = s2 / (1 - h / (2 * s2))  # = 3.0, clearly not s^2 = 2.25
    assert x.var(0).mean().item() == pytest.approx(expected, rel=0.02)
    assert (x.mean(0) - m).abs().max() < 0.04


def test_lmc_bias_error_shifts_the_mean_by_eps_lambda():
    """E4 (b): with s + eps v on N(0, lam I), the stationary mean is eps lam v exactly."""
    lam, eps = 2.0, 0.3
    gm = GaussianMixture([1.0], [[0.0, 0.0, 0.0]], math.sqrt(lam))
    sde = VESDE(1e-6, 1.0)  # at t = 0 the noised law is the data law (variance + 1e-12)
    biased = BiasError(gm.score_fn(sde), eps, direction=[0.0, 1.0, 0.0])
    t0 = torch.zeros(10_000, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(10_000, 3, generator=g, dtype=torch.float64)
    x = langevin(lambda x: biased(x, t0), x0, step_size=0.2, n_steps=100, generator=g).x
    expected = torch.tensor([0.0, eps * lam, 0.0], dtype=torch.float64)
    torch.testing.assert_close(x.mean(0), expected, atol=0.06, rtol=0)  # 4 standard errors


def test_tweedie_on_a_gaussian():
    """Data N(mu, s^2 I), noise sigma: E[x0|x] has mean mu and variance s^4 / (s^2 + sigma^2)."""
    mu, s, sigma = torch.tensor([3.0, -1.0], dtype=torch.float64), 0.8, 1.5
    gm = GaussianMixture([1.0], mu[None], s)
    sde = VESDE(0.01, 10.0)
    t = sde.t_from_sigma(torch.tensor(sigma, dtype=torch.float64))
    n = 50_000
    x = gm.marginal(sde, t.item()).sample(n, torch.Generator().manual_seed(2))
    den = tweedie_denoise(sde, gm.score_fn(sde), x, t.expand(n))
    assert (den.mean(0) - mu).abs().max() < 0.01
    assert den.var(0).mean().item() == pytest.approx(s**4 / (s**2 + sigma**2), rel=0.02)
    # the same through OU scaling: E[x0 | x_t] = (x + std^2 s) / scale
    ou = OUSDE(T=2.0)
    xt = gm.marginal(ou, 0.4).sample(n, torch.Generator().manual_seed(3))
    den = tweedie_denoise(ou, gm.score_fn(ou), xt, torch.full((n,), 0.4, dtype=torch.float64))
    a, std = math.exp(-0.4), math.sqrt(1 - math.exp(-0.8))
    assert den.var(0).mean().item() == pytest.approx(s**4 * a**2 / (a**2 * s**2 + std**2), rel=0.02)


def test_annealing_recovers_mode_weights_plain_langevin_does_not():
    """E1: 0.8 N((5,5), I) + 0.2 N((-5,-5), I). ALD (sigma 20 -> 1, 10 levels, 100 steps each,
    alpha_i = 0.1 sigma_i^2) gives weight 0.8 +- 0.03 (measured 0.792); LMC from U[-8, 8]^2
    (h = 0.05, 1000 steps) stays near 0.5 (measured 0.507)."""
    gm = GaussianMixture([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0)
    n = 2500  # binomial SE 0.008 at w = 0.8, 0.01 at 0.5
    g = torch.Generator().manual_seed(4)
    sde = VESDE(sigma_min=1.0, sigma_max=20.0, N=10)
    res = annealed_langevin(sde, gm.score_fn(sde), (n, 2), n_steps_each=100, step_lr=0.1,
                            generator=g, dtype=torch.float64)
    assert res.nfe == 10 * 100 + 1
    w_ald = mode_weights(res.x, gm)[0].item()
    x0 = 16 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 8
    x = langevin(gm.score, x0, step_size=0.05, n_steps=1000, generator=g).x
    w_lmc = mode_weights(x, gm)[0].item()
    assert abs(w_ald - 0.8) < 0.03, w_ald
    assert abs(w_lmc - 0.5) < 0.05, w_lmc


def test_ald_defaults_use_technique_4_and_report_levels():
    gm = GaussianMixture([1.0], [[0.0, 0.0]], 1.0)
    sde = VESDE(0.01, 1.0, N=5)
    levels = []
    res = annealed_langevin(sde, gm.score_fn(sde), (3, 2), n_steps_each=2, denoise=False,
                            callback=lambda s: levels.append(s.i))
    assert res.nfe == 10 and levels == [0, 1, 2, 3, 4]
    from sgm_lightning.noise_design import ald_step_size

    assert res.info["step_lr"] == pytest.approx(ald_step_size(sde.discrete_sigmas.double().numpy(), 2))


def test_langevin_bad_arguments():
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="step_size"):
        langevin(lambda x: -x, x0, step_size=-0.1, n_steps=3)
    with pytest.raises(ValueError, match="n_steps"):
        langevin(lambda x: -x, x0, step_size=0.1, n_steps=0)
    with pytest.raises(ValueError, match="x0"):
        langevin(lambda x: -x[:, :1], x0, step_size=0.1, n_steps=2)
    gm = GaussianMixture([1.0], [[0.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match="step_lr"):
        annealed_langevin(VESDE(), gm.score_fn(VESDE()), (4, 2), n_steps_each=1, step_lr=-1.0)
    with pytest.raises(ValueError, match="step_lr: required"):
        annealed_langevin(OUSDE(), gm.score_fn(OUSDE()), (4, 2), n_steps_each=1)


def test_bad_set_traps_cold_langevin_but_not_annealing():
    """docs/theory.md E4b: data N(0, I_10), a spurious mode at x_1 = 8 sqrt(v) on the bad set
    {x_1 > 4 sqrt(v)} (p = 3e-5, L2 error 0.045). Cold LMC from U[-10, 10]^10 is trapped ~30% of
    the time (measured 0.320, n = 500, 800 steps); ALD (20 levels x 50 steps, sigma 20 -> 0.5)
    keeps a warm start (0.024 trapped); with only 5 levels the warm start is lost (0.108)."""
    gm = GaussianMixture([1.0], [[0.0] * 10], 1.0)
    sde = VESDE(0.01, 20.0)
    bad = BadSetError(gm.score_fn(sde), gm, sde)
    n = 500
    g = torch.Generator().manual_seed(0)
    x0 = 20 * torch.rand(n, 10, generator=g, dtype=torch.float64) - 10
    t0 = torch.zeros(n, dtype=torch.float64)
    cold = langevin(lambda x: bad(x, t0), x0, step_size=0.05, n_steps=800, generator=g).x
    trapped_cold = (cold[:, 0] > 4 * math.sqrt(1 + 1e-4)).double().mean().item()

    def ald_trapped(levels):
        sig = torch.exp(torch.linspace(math.log(20.0), math.log(0.5), levels, dtype=torch.float64))
        res = annealed_langevin(sde, bad, (n, 10), levels=sde.t_from_sigma(sig), step_lr=0.01,
                                n_steps_each=50, denoise=False, generator=g, dtype=torch.float64)
        return (res.x[:, 0] > 4 * math.sqrt(1.25)).double().mean().item()

    warm, coarse = ald_trapped(20), ald_trapped(5)
    assert trapped_cold > 0.2, trapped_cold
    assert warm < 0.07, warm
    assert coarse > warm + 0.05, (coarse, warm)
