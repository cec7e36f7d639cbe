"""The end-of-training draw costs at most what training cost (SamplingCallback.end_count)."""

from __future__ import annotations

import torch

from sgm_lightning.checkpoint import load_model
from sgm_lightning.config import load_config
from sgm_lightning.sampling import draw_samples, sampler_settings
from sgm_lightning.training import train


def run(tmp_path, n: int, steps: int):
    cfg = load_config("toy_mixture", [
        f"checkpoint.dir={tmp_path}/ck", "logging.logger=none", "data.n_points=1200", "data.val_batch_size=120",
        "data.batch_size=32", "model.kwargs.hidden=32", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0", f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}", "sample.at_end=true", f"sample.n_samples={n}", "sample.batch_size=500",
        "sample.steps=50", "sample.seed=5", f"name=cap{n}-{steps}"])
    res = train(cfg, "toy_mixture")
    cb = next(c for c in res.trainer.callbacks if type(c).__name__ == "SamplingCallback")
    return cfg, res, cb


def test_a_short_run_draws_fewer_end_samples_and_they_are_the_same_samples(tmp_path):
    # 4 steps x batch 32 x 3 passes = 384 network passes; PC 50 steps costs 101 NFE per sample: 3 -> floor 64
    cfg, res, cb = run(tmp_path, n=1000, steps=4)
    assert cb.samples.shape == (64, 2) and cb.nfe == 101
    m = load_model(res.run_dir / "last.ckpt")
    name, options = sampler_settings(cfg.sample, per_sample=True)  # the callback's per-sample norms
    x, _ = draw_samples(m.score_fn(), m.sde, m.shape, list(range(64)), seed=5, sampler=name, options=options)
    torch.testing.assert_close(cb.samples, x, atol=1e-4, rtol=1e-4)  # sample k does not depend on the count


def test_the_budget_grows_with_training(tmp_path):
    # 40 steps x 32 x 3 = 3,840 passes / 101 NFE = 38 -> still the floor; 400 steps: 380 samples
    assert run(tmp_path, n=1000, steps=40)[2].samples.shape[0] == 64
    assert run(tmp_path, n=200, steps=400)[2].samples.shape[0] == 200  # enough budget: all of n_samples
