"""Samplers run without autograd: calling one on a network keeps no graph (the memory trap)."""

from __future__ import annotations

import pytest
import torch

from sgm_lightning.sampling import SAMPLERS, langevin, run_sampler
from sgm_lightning.sde import VESDE

SDE = VESDE(0.01, 5.0, N=50)
OPTIONS = {"ald": {"n_steps_each": 1, "step_lr": 1e-4}, "pc": {"steps": 5}, "ode": {"method": "heun", "steps": 5},
           "edm_heun": {"steps": 4}, "edm_stochastic": {"steps": 4}, "dpm_solver_2m": {"steps": 4}}


class TinyScore(torch.nn.Module):
    """A score with parameters: under autograd its output would carry a graph."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x, t):
        self.grad_was_on = torch.is_grad_enabled()
        return -self.w * x / (1 + SDE.marginal_prob(x, t)[1].reshape(-1, 1) ** 2)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_no_graph_is_kept(name):
    score = TinyScore()
    res = run_sampler(name, SDE, score, (8, 2), generator=torch.Generator().manual_seed(0), **OPTIONS[name])
    assert torch.is_grad_enabled()  # the caller's state is restored
    assert not res.x.requires_grad and res.x.grad_fn is None and score.grad_was_on is False
    # grad=True: a caller that differentiates through sampling gets the graph
    direct = SAMPLERS[name](SDE, score, (8, 2), generator=torch.Generator().manual_seed(0), grad=True, **OPTIONS[name])
    assert direct.x.requires_grad and score.grad_was_on is True
    torch.testing.assert_close(direct.x.detach(), res.x)  # the same samples either way
    (g,) = torch.autograd.grad(direct.x.sum(), score.w)
    assert torch.isfinite(g)


def test_plain_langevin_too():
    score = TinyScore()
    res = langevin(lambda x: score(x, torch.zeros(len(x))), torch.zeros(4, 2), step_size=0.1, n_steps=3,
                   generator=torch.Generator().manual_seed(0))
    assert not res.x.requires_grad and score.grad_was_on is False
