"""EDM preconditioning (Karras et al. 2022, Table 1), its noise-level distributions and loss weight.

* the coefficients equal the closed forms of Table 1 at several sigma;
* wrapping is exact: an exact denoiser written as c_skip x + c_out F gives back the exact score on
  every process, and every sampler draws the same samples through it;
* the EDM loss weight equals lambda(sigma) || D - x_0 ||^2 with lambda = 1 / c_out^2;
* the training noise levels follow their distributions.
"""

import math

import pytest
import torch
from torch import nn

from sgm_lightning.analytic import GaussianMixture
from sgm_lightning.losses import dsm_loss, sample_times
from sgm_lightning.nets.precond import Precond, network_labels
from sgm_lightning.nets.wrapper import score_fn_from_net
from sgm_lightning.sampling import run_sampler
from sgm_lightning.sde import OUSDE, SubVPSDE, VESDE, VPSDE

SIGMAS = [0.002, 0.1, 0.5, 1.0, 3.0, 80.0]


@pytest.mark.parametrize("sigma", SIGMAS)
def test_edm_coefficients_match_table_1(sigma):
    sd = 0.5
    coeffs = Precond("edm", sd).coeffs(torch.tensor([sigma], dtype=torch.float64))
    c_skip, c_out, c_in, c_noise = (c.item() for c in coeffs)
    assert c_skip == pytest.approx(sd**2 / (sigma**2 + sd**2), rel=1e-12)
    assert c_out == pytest.approx(sigma * sd / math.sqrt(sigma**2 + sd**2), rel=1e-12)
    assert c_in == pytest.approx(1 / math.sqrt(sigma**2 + sd**2), rel=1e-12)
    assert c_noise == pytest.approx(math.log(sigma) / 4, rel=1e-12)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_vp_and_ve_coefficients_match_table_1(sigma):
    s = torch.tensor([sigma], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = (c.item() for c in Precond("vp").coeffs(s))
    t = (math.sqrt(0.1**2 + 2 * 19.9 * math.log1p(sigma**2)) - 0.1) / 19.9
    assert (c_skip, c_out) == (1.0, pytest.approx(-sigma, rel=1e-12))
    assert c_in == pytest.approx(1 / math.sqrt(sigma**2 + 1), rel=1e-12)
    assert c_noise == pytest.approx(999 * t, rel=1e-12)
    # t is the inverse of EDM's VP sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)
    assert math.sqrt(math.exp(19.9 * t**2 / 2 + 0.1 * t) - 1) == pytest.approx(sigma, rel=1e-9)
    c_skip, c_out, c_in, c_noise = (c.item() for c in Precond("ve").coeffs(s))
    assert (c_skip, c_out, c_in) == (1.0, pytest.approx(sigma, rel=1e-12), 1.0)
    assert c_noise == pytest.approx(math.log(sigma / 2), rel=1e-12)


def test_edm_loss_weight_is_one_over_c_out_squared():
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    sd = 0.7
    want = (sigma**2 + sd**2) / (sigma * sd) ** 2
    torch.testing.assert_close(Precond("edm", sd).loss_weight(sigma), want, rtol=1e-12, atol=0)


def test_bad_kind_and_sigma_data_are_named():
    with pytest.raises(ValueError, match="precond"):
        Precond("edm2")
    with pytest.raises(ValueError, match="sigma_data"):
        Precond("edm", sigma_data=0.0)


# --- an exact denoiser behind the preconditioning ----------------------------------------------
GM = GaussianMixture([0.5, 0.3, 0.2], [[4.0, 0.0], [-4.0, 2.0], [0.0, -4.0]], [0.5, 1.0, 0.7])
WIDE = VESDE(1e-4, 1e4)  # sigma-space: x = x_0 + sigma n
PROCESSES = {"ve": VESDE(0.01, 20.0), "vp": VPSDE(), "subvp": SubVPSDE(), "ou": OUSDE(T=5.0)}


class ExactF(nn.Module):
    """F(c_in x; c_noise) such that c_skip x + c_out F = the exact denoiser x + sigma^2 grad log p_sigma."""

    def __init__(self, precond: Precond):
        super().__init__()
        self.precond = precond
        self.exact = GM.score_fn(WIDE)

    def sigma_of(self, c_noise):
        if self.precond.kind == "edm":
            return torch.exp(4 * c_noise)
        if self.precond.kind == "ve":
            return 2 * torch.exp(c_noise)
        p = self.precond  # invert c_noise = (M - 1) t and EDM's VP sigma(t)
        t = c_noise / (p.M - 1)
        return torch.sqrt(torch.expm1(0.5 * p.beta_d * t**2 + p.beta_min * t))

    def forward(self, x_in, labels):
        sigma = self.sigma_of(labels.double()).to(x_in.dtype)
        c_skip, c_out, c_in, _ = (c[:, None] for c in self.precond.coeffs(sigma))
        x = x_in / c_in
        denoised = x + sigma[:, None] ** 2 * self.exact(x, WIDE.t_from_sigma(sigma))
        return (denoised - c_skip * x) / c_out


@pytest.mark.parametrize("kind", ["edm", "vp", "ve"])
@pytest.mark.parametrize("process", list(PROCESSES))
def test_preconditioned_exact_denoiser_gives_the_exact_score(kind, process):
    sde = PROCESSES[process]
    precond = Precond(kind, sigma_data=1.3)
    fn = score_fn_from_net(ExactF(precond), sde, precond=precond)
    exact = GM.score_fn(sde)
    g = torch.Generator().manual_seed(0)
    t = sde.eps + (sde.T - sde.eps) * torch.rand(256, generator=g, dtype=torch.float64)
    x = sde.perturb(GM.sample(256, generator=g), t, torch.randn(256, 2, generator=g, dtype=torch.float64))
    torch.testing.assert_close(fn(x, t), exact(x, t), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name,options", [
    ("pc", {"steps": 30}), ("ode", {"method": "heun", "steps": 20}), ("edm_heun", {"steps": 10}),
    ("edm_stochastic", {"steps": 10}), ("dpm_solver_2m", {"steps": 10}),
    ("ald", {"n_steps_each": 2, "step_lr": 1e-3}),
])
def test_every_sampler_draws_the_same_samples_through_the_wrapper(name, options):
    sde = VPSDE(N=40) if name == "ald" else PROCESSES["vp"]
    precond = Precond("edm", sigma_data=2.0)
    wrapped = score_fn_from_net(ExactF(precond), sde, precond=precond)
    runs = [run_sampler(name, sde, fn, (64, 2), generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64, **options).x for fn in (wrapped, GM.score_fn(sde))]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-6, atol=1e-6)


def test_network_labels_follow_the_embedding():
    """Fourier embeddings of log(label) get exp(c_noise); NCSNv2 (output / label) gets 1."""
    from sgm_lightning.nets import NCSNv2
    from sgm_lightning.nets.mlp import ScoreMLP

    c = torch.tensor([-1.0, 0.5])
    torch.testing.assert_close(network_labels(ScoreMLP(2, embedding="fourier"), c), c.exp())
    torch.testing.assert_close(network_labels(ScoreMLP(2, embedding="positional"), c), c)
    v2 = NCSNv2(image_size=16, num_channels=1, nf=8, num_scales=10)
    torch.testing.assert_close(network_labels(v2, c), torch.ones(2))


# --- the loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", list(PROCESSES))
def test_edm_weighting_is_lambda_times_denoiser_error(process):
    """loss = (sigma^2 + sd^2) / (sigma sd)^2 || D - x_0 ||^2 (mean over dims) with D = x/s + sigma^2 s score."""
    sde, sd = PROCESSES[process], 0.8
    g = torch.Generator().manual_seed(1)
    x0 = GM.sample(128, generator=g)
    t = sample_times(128, sde, 1e-3, g, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    fn = GM.score_fn(sde)
    losses, _ = dsm_loss(fn, sde, x0, t=t, z=z, weighting="edm", sigma_data=sd)
    scale, std = sde.marginal_coeffs(t)
    sigma = std / scale
    xt = sde.perturb(x0, t, z)
    denoised = xt / scale[:, None] + (scale * sigma**2)[:, None] * fn(xt, t)
    want = (sigma**2 + sd**2) / (sigma * sd) ** 2 * (denoised - x0).square().mean(1)
    torch.testing.assert_close(losses, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("process", list(PROCESSES))
def test_lognormal_levels_have_edm_moments(process):
    """ln sigma(t) of 20,000 draws: mean P_mean and std P_std within 4 standard errors."""
    sde, n = PROCESSES[process], 20_000
    t = sample_times(n, sde, generator=torch.Generator().manual_seed(0), dist="lognormal",
                     P_mean=-0.4, P_std=0.9, dtype=torch.float64)
    ls = sde.sigma(t).log()
    assert abs(ls.mean().item() + 0.4) < 4 * 0.9 / math.sqrt(n)
    assert abs(ls.std().item() - 0.9) < 4 * 0.9 / math.sqrt(2 * n)


@pytest.mark.parametrize("process", list(PROCESSES))
def test_log_uniform_levels_fill_the_sampling_range(process):
    sde, n = PROCESSES[process], 20_000
    t = sample_times(n, sde, 1e-3, torch.Generator().manual_seed(0), dist="log_uniform", dtype=torch.float64)
    lo, hi = (math.log(s) for s in sde.sigma_range(1e-3))
    u = (sde.sigma(t).log() - lo) / (hi - lo)
    assert u.min().item() >= -1e-9 and u.max().item() <= 1 + 1e-9
    # uniform on [0, 1]: mean 1/2, variance 1/12, and each decile holds 10% (+-1.2%, ~4 SE)
    assert abs(u.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / n)
    counts = torch.histc(u.float(), bins=10, min=0, max=1) / n
    assert (counts - 0.1).abs().max().item() < 0.012


@pytest.mark.parametrize("preset,arch,kwargs,sde", [
    ("ncsnpp_digits", "ncsnpp", {"nf": 8}, "ve"),
    (None, "ncsnv2", {"nf": 8}, "ve"),
    (None, "ncsnpp", {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "fir": False,
                      "embedding_type": "positional", "progressive_input": "none"}, "vp"),
], ids=["ncsnpp-ve", "ncsnv2", "ddpmpp-vp"])
def test_every_image_network_trains_under_preconditioning(preset, arch, kwargs, sde):
    """build_net turns off the network's own 1/sigma scaling; the preconditioned score is finite
    and a DSM loss with EDM's weight backpropagates into every parameter."""
    from sgm_lightning.config import load_config
    from sgm_lightning.training import ScoreModule

    cfg = load_config("digits", ["model.precond=edm", "loss.weighting=edm", "loss.sigma_dist=lognormal",
                                 "model.sigma_data=0.6", f"sde.name={sde}", "sde.N=10"])
    cfg.model.preset, cfg.model.arch, cfg.model.kwargs = preset, arch, kwargs
    module = ScoreModule(cfg)
    assert getattr(module.net, "scale_by_sigma", False) is False
    x0 = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    losses, _ = module.loss_terms(x0, torch.Generator().manual_seed(1))
    losses.mean().backward()
    assert torch.isfinite(losses).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.net.parameters() if p.requires_grad)


def test_toy_mlp_trains_under_preconditioning():
    from sgm_lightning.config import load_config
    from sgm_lightning.training import ScoreModule

    cfg = load_config("toy_mixture", ["model.precond=ve", "model.kwargs.hidden=16"])
    module = ScoreModule(cfg)
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    losses, _ = module.loss_terms(x0, torch.Generator().manual_seed(1))
    assert torch.isfinite(losses).all() and module.net.scale_by_sigma is False


def test_precond_needs_continuous_levels_and_a_known_kind():
    from sgm_lightning.config import load_config

    with pytest.raises(ValueError, match="model.precond"):
        load_config("digits", ["model.precond=edm", "loss.continuous=false"])
    with pytest.raises(ValueError, match="model.precond"):
        load_config("digits", ["model.precond=karras"])
    with pytest.raises(ValueError, match="model.sigma_data"):
        load_config("digits", ["model.sigma_data=-1"])
    with pytest.raises(ValueError, match="loss.sigma_dist"):
        load_config("digits", ["loss.sigma_dist=normal"])
