"""Every sampler on every process: correct law of a 3-mode mixture, exact NFE, per-sample seeds,
argument checks, and the run_sampler registry."""

import math

import pytest
import torch

from sgm_lightning.analytic import GaussianMixture
from sgm_lightning.metrics import mode_statistics
from sgm_lightning.sampling import SAMPLERS, run_sampler
from sgm_lightning.sde import OUSDE, SubVPSDE, VESDE, VPSDE


GM = GaussianMixture([0.5, 0.3, 0.2], [[4.0, 0.0], [-4.0, 2.0], [0.0, -4.0]], [0.5, 1.0, 0.7])
PROCESSES = {"ve": VESDE(0.01, 20.0), "vp": VPSDE(), "subvp": SubVPSDE(), "ou": OUSDE(T=5.0)}


def _ald_options(sde):
    """ALD: 30 levels down to noise level 0.1 (about the modes' widths, so the last levels still
    mix), geometric in sigma; alpha_i / sigma_i^2 = step_lr / 0.1^2 = 0.2."""
    hi = sde.sigma_range()[1]
    sigmas = torch.exp(torch.linspace(math.log(hi), math.log(0.1), 30, dtype=torch.float64))
    return {"levels": sde.t_from_sigma(sigmas).clamp(max=sde.T), "step_lr": 2e-3, "n_steps_each": 10}


# (name, options, expected nfe or None for adaptive)
CONFIGS = [
    ("pc", {"steps": 100}, 201),
    # P-only ancestral (posterior variance, first order, errs low) on OU's uniform-in-t grid
    # gives 0.72x the narrow mode's variance at 100 steps; uniform in log sigma fixes it
    ("pc", {"steps": 100, "predictor": "ancestral", "corrector": "none", "grid": "log_sigma"}, 101),
    ("pc", {"steps": 100, "predictor": "exponential"}, 201),
    ("pc", {"steps": 100, "predictor": "euler_maruyama", "corrector": "ald", "snr": 0.1}, 201),
    ("ald", None, 301),
    ("ode", {"method": "heun", "steps": 50}, 101),
    ("ode", {"method": "rk4", "steps": 10, "grid": "log_sigma"}, 41),
    ("ode", {"method": "rk45"}, None),
    ("edm_heun", {}, 35),
    ("edm_stochastic", {}, 79),
    ("dpm_solver_2m", {"steps": 40}, 40),
]


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


@pytest.mark.parametrize("process", list(PROCESSES))
@pytest.mark.parametrize("name,options,nfe", CONFIGS, ids=[
    f"{c[0]}-{c[1].get('predictor', c[1].get('method', '')) if c[1] else ''}" for c in CONFIGS])
def test_sampler_recovers_three_mode_mixture(process, name, options, nfe):
    """Mode weights within 0.04 (n = 2000, ~3.5 SE) and per-mode variances within [0.8, 1.25] of
    the target; nfe equals the number of score calls (and the closed form where there is one)."""
    sde = PROCESSES[process]
    options = _ald_options(sde) if options is None else options
    score = Counter(GM.score_fn(sde))
    res = run_sampler(name, sde, score, (2000, 2), generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64, **options)
    assert res.nfe == score.calls
    if nfe is not None:
        assert res.nfe == nfe
    w, means, var = mode_statistics(res.x, GM)
    assert (w - GM.weights).abs().max() < 0.04, w
    assert (means - GM.means).abs().max() < 0.15, means
    ratio = var.mean(1) / GM.stds**2
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


SEEDED = [
    ("pc", {"steps": 8, "norms": "sample"}),
    ("pc", {"steps": 8, "predictor": "ancestral", "corrector": "ald"}),
    ("ald", {"n_steps_each": 2, "step_lr": 1e-3}),
    ("ode", {"method": "euler", "steps": 8}),
    ("edm_stochastic", {"steps": 6}),
    ("dpm_solver_2m", {"steps": 6}),
]


@pytest.mark.parametrize("name,options", SEEDED, ids=[c[0] + str(i) for i, c in enumerate(SEEDED)])
def test_per_sample_seeds_make_samples_batch_independent(name, options):
    """Sample k depends only on its seed: equal whether it ran in a batch of 1, 3 or 8."""
    sde = VESDE(0.01, 20.0, N=10)
    sf = GM.score_fn(sde)
    seeds = [1000 + k for k in range(8)]
    runs = {b: run_sampler(name, sde, sf, (b, 2), generator=seeds[:b], dtype=torch.float64, **options).x
            for b in (1, 3, 8)}
    torch.testing.assert_close(runs[1][0], runs[3][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(runs[3], runs[8][:3], rtol=1e-12, atol=1e-12)
    assert (runs[8][0] - runs[8][1]).abs().max() > 1e-3  # different seeds, different samples


def test_batch_norms_couple_the_batch():
    """The default norms="batch" makes sample 0 depend on its batch-mates (documented)."""
    sde = VESDE(0.01, 20.0, N=10)
    seeds = list(range(8))
    a = run_sampler("pc", sde, GM.score_fn(sde), (1, 2), generator=seeds[:1], steps=8, dtype=torch.float64).x
    b = run_sampler("pc", sde, GM.score_fn(sde), (8, 2), generator=seeds, steps=8, dtype=torch.float64).x
    assert (a[0] - b[0]).abs().max() > 1e-6


def test_callback_sees_every_step():
    sde = VPSDE()
    seen = []
    cb = lambda s: seen.append((s.i, float(s.t.reshape(-1)[0]), s.x.shape))  # noqa: E731
    run_sampler("pc", sde, GM.score_fn(sde), (4, 2), steps=5, callback=cb)
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert seen[-1][1] == pytest.approx(sde.eps) and seen[0][2] == (4, 2)
    seen.clear()
    run_sampler("edm_heun", sde, GM.score_fn(sde), (4, 2), steps=4, callback=cb)
    assert [s[0] for s in seen] == [0, 1, 2, 3] and seen[-1][1] == 0.0
    seen.clear()
    run_sampler("dpm_solver_2m", sde, GM.score_fn(sde), (4, 2), steps=3, callback=cb)
    times = [s[1] for s in seen]
    assert len(times) == 3 and times[0] > times[1] > times[2] == 0.0


BAD = [
    ("pc", {"predictor": "heun"}, "predictor: unknown value 'heun'; choose one of"),
    ("pc", {"corrector": "mala"}, "corrector: unknown value"),
    ("pc", {"norms": "global"}, "norms: unknown value"),
    ("pc", {"steps": 0}, "steps: expected an integer >= 1"),
    ("pc", {"snr": -0.1}, "snr: expected a finite number >= 0"),
    ("pc", {"predictor": "none", "corrector": "none"}, "predictor, corrector"),
    ("pc", {"predictor": "none", "corrector_steps": 0}, "predictor, corrector"),
    ("pc", {"corrector_steps": -1}, "corrector_steps: expected an integer >= 0"),
    ("pc", {"eps": 2.0}, "t_start, eps"),
    ("pc", {"grid": "cosine"}, "grid: unknown value"),
    ("ald", {"step_lr": -1e-3}, "step_lr"),
    ("ald", {"n_steps_each": 0}, "n_steps_each"),
    ("ode", {"method": "rk2"}, "method: unknown value"),
    ("ode", {"method": "rk45", "steps": 10}, "steps: adaptive"),
    ("edm_heun", {"steps": -1}, "steps"),
    ("edm_heun", {"S_churn": 10.0}, "S_churn: not an option of sampler 'edm_heun'"),
    ("edm_stochastic", {"S_noise": -1.0}, "S_noise"),
    ("dpm_solver_2m", {"schedule": "cosine"}, "schedule: unknown value"),
    ("pc", {"temperature": 1.0}, "temperature: not an option of sampler 'pc'"),
]


@pytest.mark.parametrize("name,options,message", BAD, ids=[f"{b[0]}-{next(iter(b[1]))}" for b in BAD])
def test_bad_arguments_raise_value_error_naming_the_argument(name, options, message):
    sde = VESDE(0.01, 20.0, N=10)
    calls = Counter(GM.score_fn(sde))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        run_sampler(name, sde, calls, (4, 2), **options)
    assert calls.calls == 0  # rejected before any work


def test_shape_mismatch_and_unknown_sampler():
    sde = VESDE(0.01, 20.0, N=10)
    for name in SAMPLERS:
        with pytest.raises(ValueError, match=r"shape: samples of shape \(3,\) have 3 values .* d=2"):
            run_sampler(name, sde, GM.score_fn(sde), (4, 3), **({"step_lr": 1e-3} if name == "ald" else {}))
    # a score function without .dim: caught at its first call
    with pytest.raises(ValueError, match="shape: score_fn returned"):
        run_sampler("pc", sde, lambda x, t: x[:, :1], (4, 2), steps=2)
    with pytest.raises(ValueError, match="sampler: unknown name 'euler'; choose one of"):
        run_sampler("euler", sde, GM.score_fn(sde), (4, 2))
    assert {"ald", "pc", "ode", "edm_heun", "edm_stochastic", "dpm_solver_2m"} <= set(SAMPLERS)
