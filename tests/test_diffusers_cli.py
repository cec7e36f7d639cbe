"""diffusers folders on the command line and in ``load_model``: ``sgm sample --ckpt <diffusers folder>``
samples from the imported NCSN++; ``sgm export --format diffusers`` writes a folder that reads back
into bitwise the same weights and images; a non-VE model or a network diffusers' UNet2DModel cannot
represent is refused in one line before any file is written; ``--push-to-hub`` calls huggingface_hub.
Every model is tiny, random and built here (no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from sgm_lightning.checkpoint import build_net, load_model
from sgm_lightning.cli import main
from sgm_lightning.config import config_from_yaml, data_shape, to_yaml
from sgm_lightning.nets import score_fn_from_net
from sgm_lightning.nets.diffusers_io import from_diffusers
from sgm_lightning.sde import VESDE
from test_diffusers_io import UNET, jitter_  # the same tiny Skip-block NCSN++ as the interop tests

SIGMA_MIN, SIGMA_MAX, N = 0.01, 50.0, 100
#: the same family in our model.kwargs (the data/sde keys come from the config)
NET = dict(nf=32, ch_mult=[1, 2, 4], num_res_blocks=1, attn_resolutions=[4], dropout=0.0, embedding_type="fourier",
           resblock_type="biggan", fir=True, skip_rescale=True, progressive="output_skip",
           progressive_input="input_skip", progressive_combine="sum", scale_by_sigma=True)
VE = {"name": "ve", "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "N": N}


def diffusers_pipeline(folder, seed: int = 0, **overrides):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    unet = jitter_(diffusers.UNet2DModel(**{**UNET, **overrides}), seed)
    sched = diffusers.ScoreSdeVeScheduler(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, num_train_timesteps=N, snr=0.17)
    diffusers.ScoreSdeVePipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return unet


def our_export(folder, *, centered: bool = False, sde: dict = VE, seed: int = 1, **kwargs):
    """One of our export folders (model.safetensors + config.yaml) of a random network."""
    cfg = config_from_yaml(yaml.safe_dump({
        "data": {"dataset": "cifar10", "image_size": 16, "centered": centered}, "sde": sde,
        "model": {"arch": "ncsnpp", "kwargs": {**NET, **kwargs}}, "loss": {"continuous": True}}))
    torch.manual_seed(seed)
    net = jitter_(build_net(cfg.model, data_shape(cfg.data), cfg.sde, cfg.data.centered), seed)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(to_yaml(cfg))
    return net


def noisy_batch(seed: int = 0, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g)
    t[0], t[1] = 1e-5, 1.0
    sigma = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t
    x = torch.rand(n, 3, 16, 16, generator=g) + sigma[:, None, None, None] * torch.randn(n, 3, 16, 16, generator=g)
    return x, t


# --- import: load_model and sgm sample on a diffusers folder -------------------------------------
@pytest.mark.parametrize("layout", ["pipeline", "unet_folder"])
def test_load_model_reads_a_diffusers_folder_with_the_same_score(tmp_path, layout):
    diffusers_pipeline(tmp_path / "pipe")
    path = tmp_path / "pipe" if layout == "pipeline" else tmp_path / "pipe" / "unet"  # finds ../scheduler
    model = load_model(path)
    net, info = from_diffusers(tmp_path / "pipe")
    assert model.shape == (3, 16, 16) and model.centered is False and model.continuous is True
    assert isinstance(model.sde, VESDE) and (model.sde.sigma_min, model.sde.sigma_max, model.sde.N) == (0.01, 50.0, 100)
    x, t = noisy_batch()
    with torch.inference_mode():
        ours = model.score_fn()(x, t)
        theirs = score_fn_from_net(net, info.sde(), continuous=True)(x, t)
    assert torch.equal(ours, theirs) and ours.abs().max() > 1.0


def test_sgm_sample_runs_on_a_diffusers_folder(tmp_path, capsys):
    diffusers_pipeline(tmp_path / "pipe")
    rc = main(["sample", "--ckpt", str(tmp_path / "pipe"), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s"),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    x = np.load(tmp_path / "s" / "samples.npz")["x"]
    assert x.shape == (2, 16, 16, 3) and x.dtype == np.uint8
    settings = yaml.safe_load((tmp_path / "s" / "sample_config.yaml").read_text())
    assert settings["sampler"] == "pc" and settings["options"]["snr"] == pytest.approx(0.17)  # the scheduler's
    assert settings["centered"] is False


# --- export --------------------------------------------------------------------------------------
def test_export_then_import_round_trips_bitwise(tmp_path, capsys):
    net = our_export(tmp_path / "ours")
    rc = main(["export", "--ckpt", str(tmp_path / "ours"), "--out", str(tmp_path / "hf"), "--format", "diffusers"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path / "hf").as_posix() for p in (tmp_path / "hf").rglob("*") if p.is_file()) == [
        "model_index.json", "scheduler/scheduler_config.json", "sgm_lightning.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors"]
    sched = json.loads((tmp_path / "hf" / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["sigma_min"], sched["sigma_max"], sched["num_train_timesteps"]) == (0.01, 50.0, 100)
    assert (sched["snr"], sched["correct_steps"]) == (0.16, 1)  # pc_sample's defaults (the config sets none)
    back = load_model(tmp_path / "hf")
    mine, theirs = net.state_dict(), back.net.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    x, t = noisy_batch(1)
    with torch.inference_mode():
        assert torch.equal(load_model(tmp_path / "ours").score_fn()(x, t), back.score_fn()(x, t))
    # sgm sample on the export and on the original: the same images, bit for bit
    for src in ("ours", "hf"):
        assert main(["sample", "--ckpt", str(tmp_path / src), "--n", "2", "--steps", "2",
                     "--out", str(tmp_path / f"s-{src}"), "--no-progress"]) == 0
    a, b = (np.load(tmp_path / f"s-{s}" / "samples.npz")["x"] for s in ("ours", "hf"))
    assert np.array_equal(a, b)
    settings = [yaml.safe_load((tmp_path / f"s-{s}" / "sample_config.yaml").read_text()) for s in ("ours", "hf")]
    assert settings[0]["options"] == settings[1]["options"] and settings[0]["sampler"] == settings[1]["sampler"]


def test_a_centered_model_keeps_its_pixel_range_through_the_export(tmp_path, capsys):
    our_export(tmp_path / "ours", centered=True)
    rc = main(["export", "--ckpt", str(tmp_path / "ours"), "--out", str(tmp_path / "hf"), "--format", "diffusers"])
    assert rc == 0
    assert "ScoreSdeVePipeline clamps its samples to [0, 1]" in capsys.readouterr().err
    assert json.loads((tmp_path / "hf" / "sgm_lightning.json").read_text())["data_centered"] is True
    assert load_model(tmp_path / "hf").centered is True


@pytest.mark.parametrize("kind, message", [
    ("vp", "sgm export: error: --format diffusers: {ckpt} was trained with sde.name=vp; diffusers' "
           "ScoreSdeVeScheduler is a VE SDE, so only sde.name=ve models export"),
    ("residual", "sgm export: error: to_diffusers: progressive_input='residual' cannot be represented"),
])
def test_what_diffusers_cannot_hold_is_refused_before_writing(tmp_path, capsys, kind, message):
    ckpt = tmp_path / "ours"
    if kind == "vp":
        our_export(ckpt, sde={"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "N": 100})
    else:
        our_export(ckpt, progressive_input="residual")
    out = tmp_path / "hf"
    rc = main(["export", "--ckpt", str(ckpt), "--out", str(out), "--format", "diffusers"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(message.format(ckpt=ckpt)), err
    assert not out.exists()


def test_the_default_format_is_still_ours(tmp_path):
    our_export(tmp_path / "ours")
    assert main(["export", "--ckpt", str(tmp_path / "ours"), "--out", str(tmp_path / "again")]) == 0
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["config.yaml", "model.safetensors"]


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(tmp_path, monkeypatch, capsys):
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok=False, **kw):
            calls.append(("create_repo", repo_id, exist_ok))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload_folder", folder_path, repo_id, sorted(p.name for p in (tmp_path / "hf").iterdir())))

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    our_export(tmp_path / "ours")
    rc = main(["export", "--ckpt", str(tmp_path / "ours"), "--out", str(tmp_path / "hf"), "--format", "diffusers",
               "--push-to-hub", "me/tiny-ncsnpp"])
    assert rc == 0
    assert calls == [("create_repo", "me/tiny-ncsnpp", True),
                     ("upload_folder", str(tmp_path / "hf"), "me/tiny-ncsnpp",
                      ["model_index.json", "scheduler", "sgm_lightning.json", "unet"])]
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        f"pushed {tmp_path / 'hf'} -> https://huggingface.co/me/tiny-ncsnpp"
