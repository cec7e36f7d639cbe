"""Exact-score targets: the noised mixture law, its score, and the score-error wrappers."""

import math

import pytest
import torch

from sgm_lightning.analytic import BadSetError, BiasError, GaussianMixture, SmoothError
from sgm_lightning.sde import OUSDE, SubVPSDE, VESDE, VPSDE

PROCESSES = [VESDE(sigma_min=0.01, sigma_max=10.0), VPSDE(), SubVPSDE(), OUSDE(T=3.0)]
ids = lambda s: type(s).__name__  # noqa: E731

ISO = GaussianMixture([0.5, 0.3, 0.2], [[2.0, 0.0], [-2.0, 1.0], [0.0, -3.0]], [0.5, 1.0, 0.3])
FULL = GaussianMixture(
    [0.4, 0.6], [[1.0, 0.0, -1.0], [-1.0, 2.0, 0.5]],
    covs=[[[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]],
          [[0.3, -0.1, 0.0], [-0.1, 0.6, 0.0], [0.0, 0.0, 1.5]]],
)


@pytest.mark.parametrize("gm", [ISO, FULL], ids=["isotropic", "full"])
@pytest.mark.parametrize("sde", PROCESSES, ids=ids)
def test_score_fn_equals_autograd_of_marginal_log_prob(sde, gm):
    """score_fn(sde) with a different t per sample = grad of marginal(sde, t).log_prob."""
    g = torch.Generator().manual_seed(0)
    ts = torch.tensor([0.0, 0.01, 0.2, 0.5, 0.9 * sde.T], dtype=torch.float64)
    x = 3 * torch.randn(len(ts), gm.dim, generator=g, dtype=torch.float64)
    got = gm.score_fn(sde)(x, ts)
    for i, t in enumerate(ts.tolist()):
        xi = x[i : i + 1].clone().requires_grad_()
        (grad,) = torch.autograd.grad(gm.marginal(sde, t).log_prob(xi).sum(), xi)
        torch.testing.assert_close(got[i : i + 1], grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", PROCESSES, ids=ids)
def test_marginal_is_the_law_of_perturbed_samples(sde):
    """x_t = s x0 + std z with x0 ~ mixture has the mean and covariance of marginal(sde, t)."""
    g = torch.Generator().manual_seed(1)
    n, t = 200_000, 0.3 * sde.T
    x0 = FULL.sample(n, g)
    tt = torch.full((n,), t, dtype=torch.float64)
    xt = sde.perturb(x0, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    m = FULL.marginal(sde, t)
    mean = m.mean()
    cov = torch.einsum("k,kij->ij", m.weights, m.covariances())
    cov = cov + torch.einsum("k,ki,kj->ij", m.weights, m.means - mean, m.means - mean)
    scale = cov.diagonal().sqrt()
    assert ((xt.mean(0) - mean).abs() / scale).max() < 0.01
    assert ((torch.cov(xt.T) - cov).abs() / scale[:, None] / scale[None]).max() < 0.01


def test_sampling_moments_and_labels():
    g = torch.Generator().manual_seed(2)
    n = 100_000
    x, labels = FULL.sample(n, g, return_labels=True)
    w = torch.bincount(labels, minlength=2).double() / n
    assert (w - FULL.weights).abs().max() < 4 * math.sqrt(0.25 / n)
    for k in range(2):
        xk = x[labels == k]
        assert (xk.mean(0) - FULL.means[k]).abs().max() < 0.02
        assert (torch.cov(xk.T) - FULL.covs[k]).abs().max() < 0.03
    # components this far apart are recovered by the largest posterior
    far = GaussianMixture([0.7, 0.3], [[6.0, 0.0], [-6.0, 0.0]], 1.0)
    x, labels = far.sample(10_000, g, return_labels=True)
    assert (far.assign(x) == labels).double().mean() > 0.999


def test_log_prob_integrates_to_one():
    u = torch.linspace(-8, 8, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(u, u)
    mass = ISO.log_prob(grid).exp().sum() * (u[1] - u[0]) ** 2
    assert abs(mass.item() - 1) < 1e-6


def test_score_is_stable_far_from_the_data():
    """Far away the widest component dominates: score = (mu_k - x)/s_k^2, no NaN/inf."""
    x = torch.tensor([[1e4, -2e4], [-3e5, 1e5]], dtype=torch.float64)
    s = ISO.score(x)
    expected = (ISO.means[1] - x) / 1.0**2  # component 1 has the largest std
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s, expected, rtol=1e-12, atol=1e-6)
    assert torch.isfinite(ISO.log_prob(x)).all()


def test_score_fn_accepts_image_shapes_and_float32():
    gm = GaussianMixture([1.0], [[0.0] * 4], [2.0])
    sf = gm.score_fn(VESDE())
    x = torch.ones(3, 1, 2, 2)
    s = sf(x, torch.zeros(3))
    assert s.shape == x.shape and s.dtype == torch.float32
    torch.testing.assert_close(s, -x / (4 + 1e-4))
    with pytest.raises(ValueError, match="x: each sample has 3 values"):
        sf(torch.ones(2, 3), torch.zeros(2))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([-0.1, 1.1], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([1.0], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture([1.0, 1.0], [[0.0], [1.0]], [1.0, 0.0])
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture([1.0], [[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixture([1.0], [[0.0]], [1.0], covs=[[[1.0]]])


@pytest.mark.parametrize("sde", [VESDE(0.01, 5.0), OUSDE(T=2.0)], ids=ids)
def test_smooth_error_has_the_requested_l2_norm(sde):
    """E_{p_t}||e||^2 = eps^2 at every t (Monte Carlo over exact p_t samples, 1% tolerance)."""
    err = SmoothError(FULL.score_fn(sde), FULL, sde, eps=0.3, n_features=8, seed=3)
    g = torch.Generator().manual_seed(4)
    n = 100_000
    for t in (0.0, 0.3 * sde.T):
        x = FULL.marginal(sde, t).sample(n, g)
        tt = torch.full((n,), t, dtype=torch.float64)
        e = err(x, tt) - FULL.score_fn(sde)(x, tt)
        ms = e.pow(2).sum(1).mean().item()
        assert abs(ms / 0.09 - 1) < 0.02, (t, ms)
        torch.testing.assert_close(err.raw_mean_sq(tt[:1]) * 0 + 0.09, err.mean_sq_error(t))


def test_bias_error_is_constant():
    sf = ISO.score_fn(VPSDE())
    err = BiasError(sf, 0.5, direction=[3.0, 4.0])
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    torch.testing.assert_close(err(x, t) - sf(x, t), torch.tensor([[0.3, 0.4]] * 5, dtype=torch.float64))


def test_bad_set_error_matches_theory_e4b():
    """Data N(0, I_10), VE: p(B) = Phi(-4) = 3.2e-5, L2 error ~ 0.045, spurious mode at 8 sqrt(v)."""
    gm = GaussianMixture([1.0], [[0.0] * 10], [1.0])
    sde = VESDE(0.01, 20.0)
    err = BadSetError(gm.score_fn(sde), gm, sde)
    v0 = 1 + 0.01**2
    p_b = 0.5 * math.erfc(4 / math.sqrt(2))
    assert err.region_mass(0.0).item() == pytest.approx(p_b, rel=1e-9)
    assert math.sqrt(err.mean_sq_error(0.0).item()) == pytest.approx(math.sqrt(64 / v0 * p_b), rel=1e-9)
    for t in (0.0, 0.5):
        v = 1 + sde.sigma(torch.tensor(t, dtype=torch.float64)).item() ** 2
        mode = torch.zeros(1, 10, dtype=torch.float64)
        mode[0, 0] = 8 * math.sqrt(v)
        assert err.spurious_mode(t).item() == pytest.approx(8 * math.sqrt(v))
        tt = torch.full((1,), t, dtype=torch.float64)
        assert err(mode, tt).abs().max() < 1e-12  # a stationary point of the perturbed score
        inside = mode * 0.99  # just left of the mode (still in B): pushed right, towards it
        assert err(inside, tt)[0, 0] > 0
        outside = mode * 0.45  # below the 4 sqrt(v) edge: the exact score
        torch.testing.assert_close(err(outside, tt), gm.score_fn(sde)(outside, tt))
