"""Typed configs: every bundled config loads; bad keys, types and values fail fast, naming the key."""

from __future__ import annotations

import pytest

from sgm_lightning.config import CONFIG_DIR, load_config, config_from_yaml, to_yaml


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_bundled_configs_load(name):
    cfg = load_config(name)
    assert cfg.trainer.get("max_steps", -1) > 0 or cfg.trainer.get("max_epochs")
    assert config_from_yaml(to_yaml(cfg)) == cfg  # the checkpoint round trip


def test_defaults_and_overrides():
    cfg = load_config(None, ["trainer.max_steps=7", "optim.lr=0.5", "trainer.devices=2", "data.mixture.stds=[1.0,2.0]"])
    assert cfg.data.dataset == "digits"  # no --config: configs/digits.yaml
    assert cfg.trainer.max_steps == 7 and cfg.trainer.devices == 2 and cfg.optim.lr == 0.5


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lrr=1", "optim.lrr"),                  # unknown key
        ("bogus=1", "bogus"),
        ("optim.lr=fast", "optim.lr"),                 # wrong type
        ("trainer.max_steps=0", "trainer.max_steps"),  # impossible value
        ("sde.sigma_min=60", "sde.sigma_min"),         # sigma_min >= sigma_max
        ("sde.N=0", "sde.N"),
        ("sample.steps=0", "sample.steps"),
        ("trainer.devicez=2", "trainer.devicez"),      # not a Trainer option
        ("trainer.gradient_clip_val=1", "trainer.gradient_clip_val"),  # set via optim.grad_clip
        ("data.dataset=imagenet", "data.dataset"),
        ("ema.decay=1.5", "ema.decay"),
        ("loss.weighting=snr", "loss.weighting"),
        ("resume=model.pt", "resume"),
    ],
)
def test_bad_values_name_the_key(override, key):
    """Through the training loader (``sgm train``), which also checks the Trainer options."""
    from sgm_lightning.training.config import load_config as load_train_config

    with pytest.raises(ValueError, match=f"^{key.replace('.', '[.]')}"):
        load_train_config("digits", [override])


def test_bad_mixture_and_override_syntax(tmp_path):
    with pytest.raises(ValueError, match="data.mixture.weights"):
        load_config("toy_mixture", ["data.mixture.weights=[0.5,0.6,0.1]"])
    with pytest.raises(ValueError, match="data.mixture.means"):
        load_config("toy_mixture", ["data.mixture.stds=[1.0]"])
    with pytest.raises(ValueError, match="key=value"):
        load_config("digits", ["trainer.max_steps"])
    with pytest.raises(FileNotFoundError, match="no_such"):
        load_config("no_such_config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  arch: mlp\n  kwarg: {}\n")
    with pytest.raises(ValueError, match="model.kwarg"):
        load_config(bad)


def test_trainer_reaches_every_lightning_option():
    from sgm_lightning.training.config import trainer_option_names

    names = trainer_option_names()
    for opt in ("devices", "strategy", "num_nodes", "precision", "max_steps", "accumulate_grad_batches",
                "val_check_interval", "deterministic", "profiler"):
        assert opt in names
    cfg = load_config("digits", ["trainer.strategy=ddp", "trainer.num_nodes=2", "trainer.precision=bf16-mixed"])
    assert cfg.trainer.num_nodes == 2
