"""Every sampler returns ``SampleResult`` and reports each step with one payload: step index,
time and noise level reached (finite, never NaN), the state (never None), a denoised estimate."""

from __future__ import annotations

import pytest
import torch

from sgm_lightning.analytic import GaussianMixture
from sgm_lightning.sampling import SampleResult, langevin, run_sampler
from sgm_lightning.sampling.base import SamplerStep
from sgm_lightning.sde import VESDE, VPSDE

GM = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5])
CASES = [
    ("pc", {"steps": 20}), ("ald", {"n_steps_each": 1, "step_lr": 1e-5}), ("ode", {"method": "heun", "steps": 3}),
    ("ode", {"method": "rk45"}), ("edm_heun", {"steps": 3}), ("edm_stochastic", {"steps": 3}),
    ("dpm_solver_2m", {"steps": 3}),
]


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0, N=5), VPSDE()], ids=["ve", "vp"])
@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{o.get('method', '')}" for n, o in CASES])
def test_every_sampler_reports_the_same_payload(sde, name, options):
    seen: list[SamplerStep] = []
    res = run_sampler(name, sde, GM.score_fn(sde), (3, 2), generator=[0, 1, 2], callback=seen.append,
                      dtype=torch.float64, **options)
    assert isinstance(res, SampleResult) and seen
    assert [s.i for s in seen] == list(range(len(seen)))
    for s in seen:
        assert s.x is not None and s.x.shape == (3, 2)
        assert s.t.shape == (3,) and s.sigma.shape == (3,)
        assert torch.isfinite(s.t).all() and torch.isfinite(s.sigma).all() and (s.sigma >= 0).all()
        d = s.denoised
        assert d.shape == (3, 2) and torch.isfinite(d).all()
        if (s.sigma == 0).all():
            assert d is s.x  # a clean state is its own estimate
    nfe = res.nfe
    seen[0].denoised  # noqa: B018 - the estimate is computed outside the sampler's NFE count
    assert res.nfe == nfe


def test_plain_langevin_returns_a_sample_result_and_clean_steps():
    seen: list[SamplerStep] = []
    res = langevin(lambda x: -x, torch.zeros(4, 2), step_size=0.1, n_steps=3, callback=seen.append)
    assert isinstance(res, SampleResult) and res.nfe == 3 and res.x.shape == (4, 2)
    assert [s.i for s in seen] == [0, 1, 2] and all((s.t == 0).all() and (s.sigma == 0).all() for s in seen)
    assert seen[-1].denoised is seen[-1].x
