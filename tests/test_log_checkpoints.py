"""logging.log_checkpoints: wandb checkpoint artifacts, refused where they cannot be uploaded."""

from __future__ import annotations

import pytest

from sgm_lightning.config import load_config
from sgm_lightning.training import train
from sgm_lightning.training.run import build_logger


def test_needs_the_wandb_logger():
    with pytest.raises(ValueError, match="logging.log_checkpoints.*logging.logger=wandb"):
        load_config("toy_mixture", ["logging.logger=csv", "logging.log_checkpoints=end"])
    with pytest.raises(ValueError, match="logging.log_checkpoints.*choose one of"):
        load_config("toy_mixture", ["logging.log_checkpoints=yes"])


def test_offline_wandb_is_refused_before_any_file_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = load_config("toy_mixture", [f"checkpoint.dir={tmp_path}/ck", f"logging.save_dir={tmp_path}/runs",
                                      "logging.log_checkpoints=all", "name=art"])
    with pytest.raises(ValueError, match="log_checkpoints=all: wandb is offline"):
        train(cfg, "toy_mixture")
    assert not (tmp_path / "ck" / "art").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("choice, log_model", [("none", False), ("end", True), ("all", "all")])
def test_online_wandb_logger_gets_the_choice(tmp_path, monkeypatch, choice, log_model):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config("toy_mixture", [f"logging.save_dir={tmp_path}/runs", "logging.wandb_mode=online",
                                      f"logging.log_checkpoints={choice}"])
    logger = build_logger(cfg, "art", "toy_mixture")  # wandb.init runs lazily: nothing goes online here
    assert logger._log_model == log_model
