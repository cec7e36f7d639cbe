"""Official score_sde_pytorch checkpoints (DataParallel keys + EMA shadow list) load into the
same LoadedModel as our checkpoints, with the EMA weights, and reproduce the reference output."""

import json
from pathlib import Path

import pytest
import torch

from sgm_lightning.official import load_official
from sgm_lightning.sde import VESDE

FIX = Path(__file__).resolve().parent / "fixtures" / "score_sde"  # made with the official code; see its README


def _official_files(tmp_path, name="ncsnpp_ve_small.pt", shadow_fn=None):
    ref = torch.load(FIX / name, weights_only=True)
    config = json.loads((FIX / "configs.json").read_text())[name]["config"]
    sd, frozen = ref["state_dict"], set(ref["non_ema_param_names"])
    shadow = [v.clone() for k, v in sd.items() if k != "sigmas" and k not in frozen]
    if shadow_fn is not None:
        shadow = shadow_fn(shadow)
    ckpt = {"model": {f"module.{k}": v for k, v in sd.items()},
            "ema": {"decay": 0.999, "num_updates": 3, "shadow_params": shadow}, "step": 1234, "optimizer": {}}
    torch.save(ckpt, tmp_path / "checkpoint_1.pth")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return ref, tmp_path / "checkpoint_1.pth", tmp_path / "config.json"


def test_official_checkpoint_reproduces_the_reference_output(tmp_path):
    ref, ckpt, cfg = _official_files(tmp_path)
    model = load_official(ckpt, cfg)
    assert isinstance(model.sde, VESDE) and model.sde.sigma_max == 50.0
    assert model.shape == (3, 16, 16) and model.centered is False and model.step == 1234
    assert model.continuous and not model.net.training
    with torch.no_grad():
        out = model.net(ref["x"], ref["labels"])
    torch.testing.assert_close(out.double(), ref["output"].double(), rtol=1e-4, atol=1e-4)
    # the score adapter: continuous VE feeds sigma(t) and the net already divides by sigma
    with torch.no_grad():
        s = model.score_fn()(ref["x"], ref["t"])
    torch.testing.assert_close(s.double(), ref["output"].double(), rtol=1e-4, atol=1e-4)


def test_the_ema_shadow_is_what_gets_loaded(tmp_path):
    def scaled(shadow):
        return [0.5 * v for v in shadow]

    ref, ckpt, cfg = _official_files(tmp_path, shadow_fn=scaled)
    net = load_official(ckpt, cfg).net
    sd = {k.removeprefix("module."): v for k, v in torch.load(ckpt, weights_only=True)["model"].items()}
    ours = net.state_dict()
    # Fourier W is not tracked by EMA: it comes from the raw model weights; the rest is the shadow
    assert torch.equal(ours["embed.fourier.W"], sd["all_modules.0.W"])
    assert torch.equal(ours["embed.dense0.weight"], 0.5 * sd["all_modules.1.weight"])
    with torch.no_grad():
        out = net(ref["x"], ref["labels"])
    assert not torch.allclose(out.double(), ref["output"].double(), rtol=1e-2, atol=1e-2)


def test_mismatched_or_broken_official_checkpoints_are_clear_errors(tmp_path):
    _, ckpt, cfg = _official_files(tmp_path, shadow_fn=lambda s: s[:-1])
    with pytest.raises(ValueError, match="EMA holds"):
        load_official(ckpt, cfg)
    _, ckpt, cfg = _official_files(tmp_path)
    config = json.loads(cfg.read_text())
    config["model"]["nf"] = 32
    cfg.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        load_official(ckpt, cfg)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_official(tmp_path / "bad.pth", cfg)
    with pytest.raises(FileNotFoundError, match="--ckpt"):
        load_official(tmp_path / "missing.pth", cfg)
    with pytest.raises(FileNotFoundError, match="--config"):
        load_official(ckpt, tmp_path / "missing.json")


def test_sgm_sample_and_colourisation_from_an_official_checkpoint(tmp_path):
    import numpy as np
    from PIL import Image

    from sgm_lightning.cli import main

    _, ckpt, cfg = _official_files(tmp_path)
    base = ["sample", "--ckpt", str(ckpt), "--config", str(cfg), "--n", "1", "--steps", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    x = np.load(tmp_path / "plain" / "samples.npz")["x"]
    assert x.shape == (1, 16, 16, 3) and x.dtype == np.uint8
    grey = (np.arange(256, dtype=np.uint8).reshape(16, 16) // 2 + 64).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert main([*base, "--out", str(tmp_path / "col"), "--colorize", str(tmp_path / "grey.png")]) == 0
    c = np.load(tmp_path / "col" / "samples.npz")["x"][0].astype(np.float64)
    import yaml

    assert yaml.safe_load((tmp_path / "col" / "sample_config.yaml").read_text())["condition"]["mode"] == "colorize"
    assert not np.array_equal(c, x[0].astype(np.float64))  # conditioning changed the image
    # in model space the grey level (channel mean) is kept exactly (these random weights push the
    # colours far out of [0, 1], so the written uint8 images are clipped)
    from sgm_lightning.controllable import load_condition, sample_conditional
    from sgm_lightning.rng import sample_generators

    model = load_official(ckpt, cfg)
    cond = load_condition("colorize", tmp_path / "grey.png", None, model.shape, model.centered)
    with torch.no_grad():
        res = sample_conditional(cond, [0], model.sde, model.score_fn(), "pc", {"steps": 2, "norms": "sample"},
                                 generator=sample_generators(0, [0]))
    want = torch.from_numpy(grey).double() / 255
    assert torch.allclose(res.x[0].double().mean(0), want, atol=1e-5)
    assert res.x[0].std(0).mean() > 0.01
