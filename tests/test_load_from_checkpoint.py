"""ScoreModule.load_from_checkpoint and the logged hyperparameters."""

from __future__ import annotations

import torch
import yaml

from sgm_lightning.config import load_config
from sgm_lightning.training import train
from sgm_lightning.training.module import ScoreModule


def test_load_from_checkpoint_gives_the_trained_module_and_tensorboard_gets_the_config(tmp_path):
    cfg = load_config("toy_mixture", [
        f"checkpoint.dir={tmp_path}/ck", f"logging.save_dir={tmp_path}/runs", "logging.logger=tensorboard",
        "sample.at_end=false", "data.n_points=600", "data.val_batch_size=60", "data.batch_size=32",
        "model.kwargs.hidden=16", "trainer.max_steps=3", "trainer.val_check_interval=3",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "name=lfc"])
    res = train(cfg, "toy_mixture")
    loaded = ScoreModule.load_from_checkpoint(res.run_dir / "last.ckpt", weights_only=True)
    trained = res.module.state_dict()
    assert loaded.state_dict().keys() == trained.keys()
    assert all(torch.equal(loaded.state_dict()[k], v.cpu()) for k, v in trained.items())
    assert loaded.cfg == res.module.cfg and loaded.cfg.model.kwargs.hidden == 16
    (hparams,) = (tmp_path / "runs").rglob("hparams.yaml")
    saved = yaml.safe_load(hparams.read_text())
    assert saved["cfg"]["model"]["kwargs"]["hidden"] == 16 and saved["cfg"]["trainer"]["max_steps"] == 3
