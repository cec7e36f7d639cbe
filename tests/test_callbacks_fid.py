"""FID/KID during training under DDP (features of both ranks counted once) and ``sgm fid``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sgm_lightning.sampling import draw_samples
from sgm_lightning.training.callbacks import FIDCallback
from sgm_lightning.cli import main
from sgm_lightning.training import train
from sgm_lightning.config import load_config
from sgm_lightning.metrics.images import ImageMetrics, reference_stats
from sgm_lightning.images import to_uint8
from sgm_lightning.training import ScoreModule

PC = {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "steps": 3, "norms": "sample"}


class LinearFeatures(nn.Module):
    """f(x) = W x / 255 on flattened uint8 images."""

    def __init__(self, d_in=64, d_out=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(d_out, d_in, generator=g))

    def forward(self, images):
        return (images.flatten(1).float() / 255) @ self.W.T


class Dump(FIDCallback):
    def __init__(self, path, **kw):
        super().__init__(**kw)
        self.path = str(path)

    def run(self, trainer, pl_module):
        with pl_module.ema_scope():
            ema = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
        scores = super().run(trainer, pl_module)
        if trainer.is_global_zero:
            torch.save({"scores": scores, "ema": ema, "world": trainer.world_size}, self.path)
        return scores


def _real_images(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)


@pytest.mark.ddp
def test_fid_under_ddp_counts_every_sample_once_and_matches_one_process(tmp_path):
    cfg = load_config(None, [
        "data.image_size=8", "model.preset=ncsnpp_digits", "model.kwargs.nf=8", "model.kwargs.ch_mult=[1]",
        "model.kwargs.num_res_blocks=1", "model.kwargs.attn_resolutions=[]", "trainer.max_steps=2",
        "trainer.strategy=ddp_fork", "trainer.devices=2", "trainer.accelerator=cpu", "num_threads=1",
        "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.batch_size=16", "data.val_batch_size=64", "logging.logger=csv",
        f"logging.save_dir={tmp_path}/runs", f"checkpoint.dir={tmp_path}/ck", "name=fid", "sample.at_end=false",
    ])
    feats = LinearFeatures()
    ref = reference_stats(feats, _real_images().split(16), keep_features=True)
    n = 5  # rank 0 draws 3, rank 1 draws 2
    cb = Dump(tmp_path / "fid.pt", features=feats, reference=ref, sampler="pc", options=PC, n_samples=n,
              at_end=True, seed=2, batch_size=2, kid_subset_size=4, exact=True)
    train(cfg, "fid", callbacks=[cb])
    got = torch.load(tmp_path / "fid.pt", weights_only=True)
    assert got["world"] == 2
    assert set(got["scores"]) == {"fid_n5", "kid_n5", "kid_std_n5"}
    # one process: the same EMA weights, seeds and reference
    module = ScoreModule(cfg)
    module.net.load_state_dict(got["ema"])
    module.net.eval()
    with torch.no_grad():
        x, _ = draw_samples(module.score_fn(), module.sde, (1, 8, 8), list(range(n)), seed=2, sampler="pc",
                            options=PC, exact=True)
    m = ImageMetrics(feats, image_shape=(1, 8, 8), kid_subset_size=4)
    m.load_reference(ref)
    m.update_fake(to_uint8(x, True).permute(0, 3, 1, 2))
    assert got["scores"]["fid_n5"] == pytest.approx(m.compute()["fid_n5"], rel=1e-6)


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_sgm_fid_scores_an_image_set_and_reuses_saved_reference_stats(tmp_path, capsys, fmt):
    feats = LinearFeatures()
    net = tmp_path / ("feats.pt" if fmt == "torchscript" else "feats.pt2")
    if fmt == "torchscript":
        torch.jit.script(feats).save(str(net))
    else:  # torch.export, with a free batch size
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(feats, (_real_images(4, 1),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(net))
    real = _real_images(60, 1)
    real = (real.int() // 2 + 40).to(torch.uint8)  # room for a shift without clipping
    fake = real + 30
    np.savez(tmp_path / "real.npz", x=real.permute(0, 2, 3, 1).numpy())
    np.savez(tmp_path / "fake.npz", x=fake.permute(0, 2, 3, 1).numpy())
    args = ["fid", "--samples", str(tmp_path / "fake.npz"), "--feature-net", str(net), "--kid-subset-size", "20"]
    assert main([*args, "--ref", str(tmp_path / "real.npz"), "--save-ref", str(tmp_path / "ref.npz"),
                 "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    delta = feats.W.detach().double() @ torch.full((64,), 30 / 255, dtype=torch.float64)
    assert scores["fid_n60"] == pytest.approx(float(delta @ delta), rel=1e-4)  # same covariance, mean moved
    assert scores["n"] == scores["n_ref"] == 60 and "kid_n60" in scores
    capsys.readouterr()
    assert main([*args, "--ref", str(tmp_path / "ref.npz")]) == 0  # the saved statistics
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["fid_n60"] == pytest.approx(scores["fid_n60"], rel=1e-9)
    assert "kid_n60" not in again  # saved without --keep-features: no KID


def test_sgm_fid_without_a_feature_network_is_a_clear_error(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 8, 8, 1), dtype=np.uint8))
    assert main(["fid", "--samples", str(tmp_path / "a.npz"), "--ref", str(tmp_path / "a.npz")]) == 2
    assert "inception_weights" in capsys.readouterr().err
    assert main(["fid", "--samples", str(tmp_path / "nope.npz"), "--ref", str(tmp_path / "a.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_training_run_attaches_fid_only_with_reference_stats_and_weights(tmp_path):
    from sgm_lightning.training.run import build_callbacks
    from sgm_lightning.metrics.images import save_reference_stats

    assert not any(isinstance(c, FIDCallback) for c in build_callbacks(load_config(None, []), tmp_path))
    with pytest.raises(ValueError, match="eval.reference_stats"):
        build_callbacks(load_config(None, ["eval.every_n_steps=100"]), tmp_path)
    save_reference_stats(tmp_path / "ref.npz", reference_stats(LinearFeatures(), _real_images().split(20)))
    with pytest.raises(ValueError, match="inception_weights"):
        build_callbacks(load_config(None, ["eval.every_n_steps=100", f"eval.reference_stats={tmp_path}/ref.npz"]),
                        tmp_path)
