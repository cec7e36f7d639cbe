"""Probability-flow likelihood on Gaussian data, where log p_t is known in closed form."""

import math

import pytest
import torch

from sgm_lightning.likelihood import bits_per_dim, dequantize, log_likelihood
from sgm_lightning.rng import sample_generators
from sgm_lightning.sde import VESDE, VPSDE, SubVPSDE, bcast



@pytest.fixture(autouse=True)
def _float64():
    """Tight asserts: every tensor in this module is float64 (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class Gaussian:
    """Data N(m, C); under an affine SDE x_t ~ N(s m, s^2 C + std^2 I), so the score is exact."""

    def __init__(self, m: torch.Tensor, C: torch.Tensor):
        self.m, self.C = m, C

    def marginal(self, sde, t: float) -> torch.distributions.MultivariateNormal:
        s, std = sde.marginal_coeffs(torch.tensor([t]))
        cov = s**2 * self.C + std**2 * torch.eye(len(self.m))
        return torch.distributions.MultivariateNormal(s * self.m, cov)

    def score_fn(self, sde):
        d = len(self.m)

        def score(x, t):
            s, std = sde.marginal_coeffs(t)
            cov = bcast(s**2, self.C[None]) * self.C + bcast(std**2, self.C[None]) * torch.eye(d)
            r = x - bcast(s, x) * self.m
            return -torch.linalg.solve(cov, r.unsqueeze(-1)).squeeze(-1)

        return score


def _full_cov_gaussian():
    A = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.4, 0.5, 0.3]])
    return Gaussian(torch.tensor([0.5, -0.3, 0.2]), A @ A.T)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_exact_trace_integrates_the_change_of_variables_to_solver_tolerance(name):
    sde = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=50.0)}[name]
    g = _full_cov_gaussian()
    x = torch.tensor([[0.3, -0.1, 0.4], [1.5, 0.2, -0.7], [-1.0, -1.2, 0.9]])
    eps = 1e-5
    res = log_likelihood(sde, g.score_fn(sde), x, estimator="exact", eps=eps, rtol=1e-7, atol=1e-7)
    exact = g.marginal(sde, eps).log_prob(x)
    # the ODE part is exact: delta_logp + log p_T(z) under the *true* law at T = log p_eps(x)
    ode_part = res.delta_logp + g.marginal(sde, sde.T).log_prob(res.z)
    assert torch.allclose(ode_part, exact, atol=1e-5), (ode_part, exact)
    # with the SDE's prior N(0, prior_std^2 I) in place of the true p_T, still close
    assert torch.allclose(res.logp, exact, atol=2e-2)
    assert res.logp.shape == (3,) and res.nfe > 10


def test_hutchinson_estimators_are_unbiased_with_per_sample_probes():
    sde, g = VPSDE(), _full_cov_gaussian()
    x0 = torch.tensor([0.3, -0.1, 0.4])
    x = x0.expand(96, 3).clone()
    exact = g.marginal(sde, 1e-5).log_prob(x0[None])[0]
    for estimator in ("rademacher", "gaussian"):
        res = log_likelihood(
            sde, g.score_fn(sde), x, estimator=estimator, method="rk4", steps=40,
            generator=sample_generators(7, range(96)),
        )
        mean, se = res.logp.mean(), res.logp.std() / math.sqrt(96)
        assert res.logp.std() > 1e-3  # the probes really vary (full covariance: off-diagonal J)
        assert abs(mean - exact) < 4 * se + 2e-3, (estimator, mean, exact, se)
        assert res.nfe == 4 * 40  # rk4: four evaluations per step
        # sample k's estimate depends only on its own seed, not on the batch it ran in
        single = log_likelihood(
            sde, g.score_fn(sde), x[5:6], estimator=estimator, method="rk4", steps=40,
            generator=sample_generators(7, [5]),
        )
        assert torch.allclose(single.logp, res.logp[5:6], atol=1e-10)


def test_rademacher_is_exact_for_a_diagonal_jacobian():
    # v_i^2 = 1, so v^T J v = tr J whenever J is diagonal (independent coordinates)
    sde = VPSDE()
    g = Gaussian(torch.tensor([0.1, -0.2, 0.3]), torch.diag(torch.tensor([0.2, 1.0, 3.0])))
    x = torch.tensor([[0.3, -0.1, 0.4]]).expand(8, 3).clone()
    res = log_likelihood(
        sde, g.score_fn(sde), x, method="rk4", steps=40, generator=sample_generators(3, range(8))
    )
    ref = log_likelihood(sde, g.score_fn(sde), x[:1], estimator="exact", method="rk4", steps=40)
    assert torch.allclose(res.logp, ref.logp.expand(8), atol=1e-9)


@pytest.mark.parametrize("centered, offset", [(True, 7.0), (False, 8.0)])
def test_bits_per_dim_of_dequantised_images_matches_the_closed_form(centered, offset):
    sde = VPSDE()
    d = 4  # images (B, 1, 2, 2)
    g = Gaussian(torch.full((d,), 0.0 if centered else 0.5), 0.3 * torch.eye(d))
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 1, 2, 2), dtype=torch.uint8, generator=gen)
    flat_score = g.score_fn(sde)

    def score(x, t):
        return flat_score(x.flatten(1), t).view_as(x)

    out = bits_per_dim(
        sde, score, images, centered=centered, generator=sample_generators(1, range(5)),
        dtype=torch.float64, estimator="exact", rtol=1e-8, atol=1e-8,
    )
    u = dequantize(images, sample_generators(1, range(5))).double()  # same per-sample streams
    assert torch.all((u * 256 >= images.double()) & (u * 256 < images.double() + 1))
    x = (2 * u - 1) if centered else u
    exact = g.marginal(sde, 1e-5).log_prob(x.flatten(1))
    expected = -exact / (d * math.log(2)) + offset
    assert torch.allclose(out.bpd, expected, atol=5e-3), (out.bpd, expected)


def test_bad_options_are_rejected_before_any_work():
    sde, g = VPSDE(), _full_cov_gaussian()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="estimator"):
        log_likelihood(sde, g.score_fn(sde), x, estimator="hutch")
    with pytest.raises(ValueError, match="steps"):
        log_likelihood(sde, g.score_fn(sde), x, method="rk4")
    with pytest.raises(ValueError, match="method"):
        log_likelihood(sde, g.score_fn(sde), x, method="rk45")
    with pytest.raises(ValueError, match="images"):
        dequantize(torch.zeros(2, 3))


def test_the_ode_likelihood_of_a_gaussian_mixture_is_exact():
    # a non-Gaussian target: 3 well-separated modes, exact noised scores and densities
    from sgm_lightning.analytic import GaussianMixture

    gm = GaussianMixture(torch.tensor([0.2, 0.3, 0.5]), torch.tensor([[-2.0, 0.0], [0.0, 2.0], [2.0, -1.0]]),
                         torch.tensor([0.5, 0.7, 0.4]))
    sde = VPSDE()
    x = torch.tensor([[-2.1, 0.2], [0.3, 1.5], [1.0, 0.0], [2.2, -1.3]])
    res = log_likelihood(sde, gm.score_fn(sde), x, estimator="exact", rtol=1e-6, atol=1e-6)
    logp = gm.log_prob_fn(sde)
    exact = logp(x, torch.full((4,), 1e-5))
    ode_part = res.delta_logp + logp(res.z, torch.full((4,), sde.T))
    assert torch.allclose(ode_part, exact, atol=1e-4), (ode_part, exact)  # measured: 2.7e-5
    assert torch.allclose(res.logp, exact, atol=1e-2)  # with the N(0, I) prior in place of p_T: 4.9e-3
