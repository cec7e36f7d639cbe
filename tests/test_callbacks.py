"""The sampling callback: every rank draws its share, rank 0 gathers exactly n samples in index
order, identical to one process drawing them all; grids, trajectory strips and NFE are logged."""

from __future__ import annotations

import csv

import pytest
import torch

from sgm_lightning.sampling import draw_samples, sampler_settings
from sgm_lightning.training.callbacks import SamplingCallback
from sgm_lightning.training import train
from sgm_lightning.config import load_config
from sgm_lightning.training import ScoreModule

PC = {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "steps": 6, "norms": "sample"}


class Dump(SamplingCallback):
    """Rank 0 writes each gathered result (and the step) next to the run."""

    def __init__(self, path, **kw):
        super().__init__(**kw)
        self.path, self.events = str(path), []

    def run(self, trainer, pl_module):
        with pl_module.ema_scope():  # the weights the samples are drawn with
            self.ema = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
        return super().run(trainer, pl_module)

    def _log(self, trainer, pl_module, frames, nfe, seconds):
        super()._log(trainer, pl_module, frames, nfe, seconds)
        self.events.append({"step": trainer.global_step, "x": self.samples.clone(), "nfe": nfe, "ema": self.ema})
        torch.save(self.events, self.path)


@pytest.mark.ddp
def test_ddp_gathers_exactly_n_samples_equal_to_one_process(tmp_path, toy_ddp_config):
    cfg = toy_ddp_config(max_steps=4, val_check_interval=4, n_points=400, val_batch_size=100)
    n = 7  # not divisible by the world size: rank 0 draws 4, rank 1 draws 3
    cb = Dump(tmp_path / "events.pt", sampler="pc", options=PC, n_samples=n, every_n_steps=2, at_end=True,
              seed=3, batch_size=2, exact=True)
    train(cfg, "toy_mixture", callbacks=[cb])
    events = torch.load(tmp_path / "events.pt", weights_only=True)
    assert [e["step"] for e in events] == [2, 4, 4][: len(events)] and len(events) == 2  # step 2, end (4)
    assert all(e["x"].shape == (n, 2) for e in events)
    assert events[0]["nfe"] == 2 * 6 + 1
    x = events[-1]["x"]
    assert len({tuple(r.tolist()) for r in x}) == n  # no duplicates
    # one process, the same EMA weights and seed: the same samples, bitwise
    module = ScoreModule(cfg)
    module.net.load_state_dict(events[-1]["ema"])
    module.net.eval()
    with torch.no_grad():
        single, _ = draw_samples(module.score_fn(), module.sde, (2,), list(range(n)), seed=3, sampler="pc",
                                 options=PC, exact=True)
    assert torch.equal(single, x)
    assert not torch.equal(events[0]["x"], x)  # the weights moved between step 2 and the end


def test_image_grid_trajectory_and_nfe_are_logged_and_repeatable(tmp_path):
    overrides = [
        "data.image_size=8", "model.preset=ncsnpp_digits", "model.kwargs.nf=8", "model.kwargs.ch_mult=[1]",
        "model.kwargs.num_res_blocks=1", "model.kwargs.attn_resolutions=[]", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.batch_size=16", "data.val_batch_size=64", "logging.logger=csv",
        f"logging.save_dir={tmp_path}/runs", f"checkpoint.dir={tmp_path}/ck", "name=img", "sample.at_end=false",
        "sample.steps=4", "sample.trajectory=true", "sample.trajectory_frames=3", "sample.n_samples=5",
        "sample.batch_size=4", "sample.seed=11", "sample.sampler=pc",
    ]
    cfg = load_config(None, overrides)  # sample.every_n_steps=0: the run itself attaches no sampler
    cb = SamplingCallback.from_config(load_config(None, [*overrides, "sample.every_n_steps=1"]),
                                      out_dir=tmp_path / "grids")
    assert cb.options["norms"] == "sample" and cb.options["steps"] == 4
    res = train(cfg, "img", callbacks=[cb])
    grids = sorted((tmp_path / "grids").glob("step_*.png"))
    strips = sorted((tmp_path / "grids").glob("trajectory_*.png"))
    assert [p.name for p in grids] == ["step_0000001.png", "step_0000002.png"] and len(strips) == 2
    from PIL import Image

    strip = Image.open(strips[-1])
    assert strip.size == (4 * (8 + 2) + 2, 8 + 4)  # 3 frames + the final sample in one row
    (metrics,) = (tmp_path / "runs").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(open(metrics)) if r.get("sample/nfe")]
    assert [float(r["sample/nfe"]) for r in rows] == [9.0, 9.0]  # 4 predictor + 4 corrector + denoise
    # the same weights and seed give the same grid every time
    first = cb.samples.clone()
    cb.run(res.trainer, res.module)
    assert torch.equal(cb.samples, first)


def test_settings_come_from_the_config_and_bad_names_are_rejected():
    cfg = load_config(None, ["sample.sampler=ald", "sample.n_steps_each=2"])
    name, opts = sampler_settings(cfg.sample)
    assert name == "ald" and opts["n_steps_each"] == 2 and "snr" not in opts
    with pytest.raises(ValueError, match="sampler: unknown"):
        sampler_settings(cfg.sample, sampler="nope")
    with pytest.raises(ValueError, match="n_samples"):
        SamplingCallback(sampler="pc", options={}, n_samples=0)


def test_an_adaptive_ode_sampler_does_not_inherit_the_pc_step_count():
    cfg = load_config(None, ["sample.sampler=pc", "sample.steps=250"])
    name, opts = sampler_settings(cfg.sample, sampler="ode")
    assert name == "ode" and opts.get("method", "rk45") == "rk45" and "steps" not in opts  # rk45: ode's default
    cfg7 = load_config(None, ["sample.sampler=ode", "sample.steps=7", "sample.method=rk4"])
    name, opts = sampler_settings(cfg7.sample, sampler="ode")
    assert opts["steps"] == 7
    with pytest.raises(ValueError, match="steps"):  # asked for explicitly: the sampler's own error
        from sgm_lightning.sampling import run_sampler
        from sgm_lightning.sde import VESDE

        _, opts = sampler_settings(cfg.sample, sampler="ode", steps=5)
        run_sampler("ode", VESDE(), lambda x, t: -x, (1, 2), **opts)



def test_trajectory_strip_shows_the_denoised_estimate():
    """Frames of a VE trajectory become Tweedie's D(x_t) = x + sigma^2 s: at sigma = 17 the state has
    std 17, its estimate lies inside the data's range (|D| <= 4.5 for means at +-4, std 0.5)."""
    from sgm_lightning.analytic import GaussianMixture
    from sgm_lightning.training.callbacks import denoised_frames
    from sgm_lightning.sde import VESDE

    sde, gm = VESDE(0.01, 17.0), GaussianMixture([0.5, 0.5], [[4.0, 0.0], [-4.0, 0.0]], [0.5, 0.5])
    g = torch.Generator().manual_seed(0)
    frames = [(torch.tensor([t], dtype=torch.float64), 17.0 ** t * torch.randn(1, 2, generator=g, dtype=torch.float64))
              for t in (1.0, 0.8, 0.5, 0.2)] + [(torch.tensor([0.0], dtype=torch.float64), torch.ones(1, 2))]
    out = denoised_frames(gm.score_fn(sde), sde, frames, 5)
    assert len(out) == 5 and frames[0][1].abs().max() > 5
    for (t, x), d in zip(frames[:4], out[:4]):
        sigma = sde.marginal_coeffs(t)[1]
        torch.testing.assert_close(d, x + sigma**2 * gm.score_fn(sde)(x, t))
        assert d.abs().max() <= 4.5
    assert torch.equal(out[4], torch.ones(1, 2))  # t = 0: shown as it is
    assert len(denoised_frames(gm.score_fn(sde), sde, frames, 3)) == 3
