"""Sampler overhead benchmark: how much wall time the samplers add on top of the score calls.

1. Ratio wall / (nfe x one score call) at batch 256, 3x16x16 samples (the call time measured
   inside the same run, so total / time-in-score), for an analytic
   Gaussian-mixture score (cheap: the samplers' own tensor work shows) and a small conv net
   (a realistic call: the target is <= 1.01).
2. Bookkeeping alone per step, in microseconds: the score function replaced by a stub that
   returns a precomputed tensor, batch 64, 3x16x16 (reference, same kind of machine: score_sde's
   PC sampler ~790 us/step, diffusers' ScoreSdeVe ~1700 us/step; target <= 300 us).

Every number is measured in this run (best of --repeats). Usage:
    .venv/bin/python scripts/bench_sampling.py [--repeats 3] [--threads N] [--device cuda]

``--device cuda`` puts the samples, the score and the noise on the GPU (times are wall clock with
the device synchronised; noise from per-sample CPU generators, as ``sgm sample`` draws it).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from sgm_lightning.analytic import GaussianMixture
from sgm_lightning.sampling import run_sampler
from sgm_lightning.sde import VESDE

SHAPE = (3, 16, 16)
D = math.prod(SHAPE)
DEVICE = torch.device("cpu")  # --device


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def clock_fn():
    """Process CPU time on one CPU thread (robust to other jobs on a shared machine), else wall
    time; on CUDA wall time after synchronising."""
    if DEVICE.type == "cpu" and torch.get_num_threads() == 1:
        return time.process_time

    def wall():
        sync()
        return time.perf_counter()
    return wall

# name, sampler, options: a few steps each (the ratio does not depend on the count)
CASES = [
    ("PC (reverse diffusion + Langevin)", "pc", {"steps": 20}),
    ("ALD", "ald", {"n_steps_each": 2, "step_lr": 1e-5}),
    ("ODE Heun", "ode", {"method": "heun", "steps": 10}),
    ("ODE RK45 (torchdiffeq)", "ode", {"method": "rk45", "rtol": 1e-3, "atol": 1e-3}),
    ("EDM Heun", "edm_heun", {"steps": 10}),
    ("EDM stochastic", "edm_stochastic", {"steps": 10}),
    ("DPM-Solver++(2M)", "dpm_solver_2m", {"steps": 10}),
]


class SmallConvNet(nn.Module):
    """A 3-layer conv net with a time embedding: a stand-in for a score network."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.mid = nn.Conv2d(ch, ch, 3, padding=1)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)
        self.emb = nn.Linear(1, ch)

    def forward(self, x, t):
        h = torch.nn.functional.silu(self.inp(x) + self.emb(t[:, None])[:, :, None, None])
        h = torch.nn.functional.silu(self.mid(h))
        return self.out(h)


def best_time(fn, repeats: int) -> float:
    """Best of ``repeats`` runs, in seconds of :func:`clock_fn`."""
    clock = clock_fn()
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def score_sde_style_pc(sde, score_fn, shape, steps, snr=0.16, generator=None):
    """Baseline: score_sde's PC loop as it is written there (corrector, then the reverse-diffusion
    predictor through sde.discretize, batch-averaged norms, a fresh time vector per step),
    re-implemented here for timing only."""
    x = sde.prior_sampling(shape, generator, device=DEVICE)
    timesteps = torch.linspace(sde.T, sde.eps, steps, device=DEVICE)
    for i in range(steps):
        vec_t = torch.ones(shape[0], device=DEVICE) * timesteps[i]
        grad = score_fn(x, vec_t)  # Langevin corrector
        noise = torch.randn(x.shape, generator=generator, device=DEVICE)
        grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
        noise_norm = torch.norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
        step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * torch.ones(shape[0], device=DEVICE)
        x_mean = x + step_size[:, None, None, None] * grad
        x = x_mean + torch.sqrt(step_size * 2)[:, None, None, None] * noise
        f, G = sde.discretize(x, vec_t)  # reverse-diffusion predictor
        rev_f = f - G[:, None, None, None] ** 2 * score_fn(x, vec_t)
        z = torch.randn(x.shape, generator=generator, device=DEVICE)
        x_mean = x - rev_f
        x = x_mean + G[:, None, None, None] * z
    return x_mean


def call_time(score_fn, batch: int, repeats: int) -> float:
    x = torch.randn(batch, *SHAPE, device=DEVICE)
    t = torch.full((batch,), 0.5, device=DEVICE)
    return best_time(lambda: [score_fn(x, t) for _ in range(5)], repeats) / 5


def sde_for_bench():
    return VESDE(sigma_min=0.01, sigma_max=20.0, N=10)


class TimedScore:
    """Wraps a score_fn and adds up the time spent inside it (same clock as :func:`best_time`)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0
        self.clock = clock_fn()

    def __call__(self, x, t):
        t0 = self.clock()
        out = self.fn(x, t)
        self.seconds += self.clock() - t0
        return out


def overhead_table(score_fn, label: str, repeats: int):
    """wall / (nfe x one call), with "one call" the mean score-call time inside that very run
    (the cost of a call depends on where the samples are, so a separate probe would mislead)."""
    sde = sde_for_bench()
    one = call_time(score_fn, 256, repeats)
    print(f"\n{label}: one score call at batch 256 = {one * 1e3:.2f} ms (probe at t = 0.5)")
    print(f"{'sampler':36s} {'nfe':>5s} {'total ms':>9s} {'in score ms':>12s} {'ratio':>7s}")
    for name, sampler, opts in CASES:
        best = None
        for _ in range(repeats):
            timed = TimedScore(score_fn)
            t0 = timed.clock()
            res = run_sampler(sampler, sde, timed, (256, *SHAPE), generator=torch.Generator().manual_seed(0),
                              device=DEVICE, **opts)
            total = timed.clock() - t0
            if best is None or total < best[0]:
                best = (total, timed.seconds, res.nfe)
        total, inside, nfe = best
        print(f"{name:36s} {nfe:5d} {total * 1e3:9.1f} {inside * 1e3:12.1f} {total / inside:7.3f}")


def bookkeeping_table(repeats: int):
    sde = sde_for_bench()
    stub_out = torch.randn(64, *SHAPE, device=DEVICE)

    def stub(x, t):
        return stub_out

    print("\nbookkeeping per step, stub score, batch 64, 3x16x16 (target <= 300 us; score_sde PC ~790 us)")
    print(f"{'sampler':36s} {'steps':>5s} {'us/step':>9s} {'us/score call':>14s}")
    base = best_time(lambda: score_sde_style_pc(sde, stub, (64, *SHAPE), 20,
                                                generator=torch.Generator(DEVICE).manual_seed(0)), repeats) / 20
    print(f"{'baseline: score_sde-style PC loop':36s} {20:5d} {base * 1e6:9.0f} {base / 2 * 1e6:14.0f}")
    noise_cost = best_time(lambda: [torch.randn(64, *SHAPE, device=DEVICE) for _ in range(20)], repeats) / 20
    print(f"{'(one torch.randn of the batch)':36s} {'':5s} {noise_cost * 1e6:9.0f}")
    # the sampler's own arithmetic: PC with its two noise draws per step replaced by a fixed tensor
    import sgm_lightning.sampling.pc as pc_module

    fixed_z, draw = torch.randn(64, *SHAPE, device=DEVICE), pc_module.noise
    pc_module.noise = lambda x, generator: fixed_z
    try:
        own = best_time(lambda: run_sampler("pc", sde, stub, (64, *SHAPE), steps=20, device=DEVICE), repeats) / 20
    finally:
        pc_module.noise = draw
    print(f"{'PC without its 2 noise draws':36s} {20:5d} {own * 1e6:9.0f} {own / 2 * 1e6:14.0f}")
    for name, sampler, opts in CASES:
        if sampler == "ode" and opts["method"] == "rk45":
            continue  # adaptive: the step count depends on the (stub) dynamics
        info = {}

        def run(sampler=sampler, opts=opts, info=info):
            calls = [0]

            def cb(step):
                calls[0] = step.i + 1

            res = run_sampler(sampler, sde, stub, (64, *SHAPE), generator=torch.Generator().manual_seed(0),
                              callback=cb, device=DEVICE, **opts)
            info["steps"], info["nfe"] = calls[0], res.nfe

        wall = best_time(run, repeats)
        per_step = wall / info["steps"]
        print(f"{name:36s} {info['steps']:5d} {per_step * 1e6:9.0f} {wall / info['nfe'] * 1e6:14.0f}"
              + (f"   {per_step / base:.2f}x baseline" if sampler == "pc" else ""))


def norms_study(repeats: int):
    """PC (reverse diffusion + Langevin, r = 0.16, 100 steps), exact scores, 3 modes of width 0.5:
    per-mode width / true width with batch-averaged vs per-sample Langevin norms, d = 4 and 256."""
    from sgm_lightning.metrics import mode_statistics
    from sgm_lightning.sde import VPSDE

    print("\nLangevin-corrector norms: per-mode std / true std (3 modes, width 0.5, PC 100 steps)")
    for d, n in ((4, 2000), (256, 500)):
        mu = torch.zeros(3, d, dtype=torch.float64)
        mu[0, 0], mu[1, 0], mu[2, 1] = 6.0, -6.0, 6.0
        gm = GaussianMixture([0.5, 0.3, 0.2], mu, 0.5)
        for sde in (VESDE(0.01, 20.0), VPSDE()):
            for norms in ("batch", "sample"):
                res = run_sampler("pc", sde, gm.score_fn(sde), (n, d), steps=100, norms=norms,
                                  generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                width = (mode_statistics(res.x, gm)[2] / 0.25).mean(1).sqrt()
                widths = [round(v, 3) for v in width.tolist()]
                print(f"d={d:4d} {type(sde).__name__:6s} norms={norms:6s} widths {widths}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--norms-study", action="store_true", help="only the batch/sample norms study")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (not with --norms-study)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # denormal floats (underflowing mixture responsibilities) would make the analytic score's
    # cost depend on where the samples are; flush them so "one call" means the same everywhere
    torch.set_flush_denormal(True)
    if args.norms_study:
        return norms_study(args.repeats)
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, {where}")
    if DEVICE.type == "cpu":  # the analytic mixture computes in float64 on the CPU
        gm = GaussianMixture([0.5, 0.3, 0.2], torch.randn(3, D) * 2, [0.5, 1.0, 0.7])
        overhead_table(gm.score_fn(sde_for_bench()), "analytic 3-mode mixture score (d = 768)", args.repeats)
    net = SmallConvNet().to(DEVICE).eval()
    with torch.no_grad():
        overhead_table(lambda x, t: net(x, t), "small conv net (3 conv layers, 32 channels)", args.repeats)
        bookkeeping_table(args.repeats)


if __name__ == "__main__":
    main()
