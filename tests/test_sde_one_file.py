"""A new forward process is one class: every per-process formula the networks, the losses and
the samplers need is a method of the SDE, so a process defined here (and nowhere else) samples
with every sampler and trains with the DSM loss."""

from __future__ import annotations

import math

import pytest
import torch

from sgm_lightning.analytic import GaussianMixture
from sgm_lightning.losses import dsm_loss
from sgm_lightning.sampling import run_sampler
from sgm_lightning.sde import SDE


class LinearVE(SDE):
    """x_t = x_0 + c t z: drift 0, g(t)^2 = d(c t)^2/dt = 2 c^2 t (EDM's sigma(t) = t for c = 1)."""

    eps = 1e-3

    def __init__(self, c: float = 60.0, N: int = 100):
        super().__init__(N)
        self.c = c

    def sde(self, x, t):
        return torch.zeros_like(x), torch.sqrt(2 * self.c**2 * t)

    def marginal_coeffs(self, t):
        return torch.ones_like(t), self.c * t

    @property
    def prior_std(self) -> float:
        return self.c * self.T

    def t_from_sigma(self, sigma):
        return sigma / self.c

    def exponential_drift_coeff(self, a, an, sd, sdn):
        return sd**2 - sdn**2


GM = GaussianMixture([1.0], [[3.0, -1.0]], 0.5)
CASES = [("pc", {"steps": 200, "predictor": "exponential", "grid": "log_sigma"}),
         ("pc", {"steps": 200, "grid": "log_sigma"}),
         ("ode", {"method": "heun", "steps": 100, "grid": "log_sigma"}), ("edm_heun", {"steps": 30}),
         ("dpm_solver_2m", {"steps": 30}),
         ("ald", {"n_steps_each": 5, "step_lr": 5e-3})]


IDS = [f"{n}-{o.get('predictor', o.get('method', ''))}" for n, o in CASES]


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_a_process_defined_in_one_class_samples_with_every_sampler(name, options):
    sde = LinearVE()
    x = run_sampler(name, sde, GM.score_fn(sde), (2000, 2), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64, **options).x
    assert torch.allclose(x.mean(0), torch.tensor([3.0, -1.0], dtype=torch.float64), atol=0.1)
    assert torch.allclose(x.std(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.1)


def test_a_process_defined_in_one_class_trains_with_the_dsm_loss():
    sde = LinearVE()
    x0 = GM.sample(512, torch.Generator().manual_seed(1), dtype=torch.float64)
    exact, _ = dsm_loss(GM.score_fn(sde), sde, x0, generator=torch.Generator().manual_seed(2))
    zero, _ = dsm_loss(lambda x, t: torch.zeros_like(x), sde, x0, generator=torch.Generator().manual_seed(2))
    assert math.isfinite(float(exact.mean())) and float(exact.mean()) < float(zero.mean())
