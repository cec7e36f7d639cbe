"""diffusers interoperability: NCSN++ weights read from and written to diffusers' folder format.

Claims, with numbers: a diffusers NCSN++ ``UNet2DModel`` (random weights, saved locally) becomes
our ``NCSNpp`` computing the same score (max |ours - theirs| / max |theirs| < 1e-4 over noise
levels 0.01..50); our network written with ``to_diffusers`` loads in ``UNet2DModel`` and
``ScoreSdeVePipeline`` and computes the same score; our samplers on an imported network give
bitwise the samples of the network it was exported from; what cannot be represented is refused in
one line that names the key. No network access: every model is built here.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from sgm_lightning.nets import NCSNpp, NCSNv2, score_fn_from_net
from sgm_lightning.nets.diffusers_io import from_diffusers, to_diffusers
from sgm_lightning.sampling import ode_sample, pc_sample
from sgm_lightning.sde import VESDE

SIGMA_MIN, SIGMA_MAX, N = 0.01, 50.0, 100

#: a tiny NCSN++ in diffusers' Skip-block layout (attention at 4x4, where the width is 128)
UNET = dict(sample_size=16, in_channels=3, out_channels=3, time_embedding_type="fourier",
            block_out_channels=(32, 64, 128), layers_per_block=1,
            down_block_types=("SkipDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D"),
            up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D", "SkipUpBlock2D"),
            mid_block_scale_factor=math.sqrt(2), norm_num_groups=None, norm_eps=1e-6, attention_head_dim=None,
            act_fn="silu")
#: the same network in our options
OURS = dict(image_size=16, num_channels=3, centered=False, nf=32, ch_mult=(1, 2, 4), num_res_blocks=1,
            attn_resolutions=(4,), dropout=0.0, embedding_type="fourier", resblock_type="biggan", fir=True,
            skip_rescale=True, progressive="output_skip", progressive_input="input_skip", progressive_combine="sum",
            scale_by_sigma=True, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, num_scales=N)


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@torch.no_grad()
def jitter_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Perturb every parameter (no zero biases, no unit GroupNorm scales, no 1e-10 last convs); eval mode."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module.eval()


def noisy_batch(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Images x_0 + sigma z at noise levels from sigma_min to sigma_max (both ends included)."""
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n).uniform_(math.log(SIGMA_MIN), math.log(SIGMA_MAX), generator=g))
    sigma[0], sigma[1] = SIGMA_MIN, SIGMA_MAX
    x = torch.rand(n, 3, 16, 16, generator=g) + sigma[:, None, None, None] * torch.randn(n, 3, 16, 16, generator=g)
    return x, sigma


@pytest.fixture(scope="module")
def diffusers():
    pytest.importorskip("diffusers")
    import diffusers

    return diffusers


def unet(diffusers, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return jitter_(diffusers.UNet2DModel(**{**UNET, **overrides}), seed)


def scheduler(diffusers):
    return diffusers.ScoreSdeVeScheduler(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, num_train_timesteps=N)


def our_net(seed: int = 1, **overrides) -> NCSNpp:
    torch.manual_seed(seed)
    return jitter_(NCSNpp(**{**OURS, **overrides}), seed)


# --- import -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, center", [("pipeline", False), ("unet_folder", True), ("object", False)])
def test_imported_network_computes_the_unet2dmodel_score(diffusers, tmp_path, layout, center):
    model = unet(diffusers, center_input_sample=center)
    if layout == "pipeline":
        diffusers.ScoreSdeVePipeline(unet=model, scheduler=scheduler(diffusers)).save_pretrained(tmp_path)
        net, info = from_diffusers(tmp_path)
    elif layout == "unet_folder":  # a bare model folder; the scheduler given separately
        model.save_pretrained(tmp_path / "model")
        scheduler(diffusers).save_pretrained(tmp_path / "sched")
        net, info = from_diffusers(tmp_path / "model", scheduler=tmp_path / "sched")
    else:
        net, info = from_diffusers(model, scheduler={"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX,
                                                     "num_train_timesteps": N})
    assert (info.sigma_min, info.sigma_max, info.num_scales) == (SIGMA_MIN, SIGMA_MAX, N)
    assert info.centered is (not center)  # diffusers maps x -> 2x - 1 when center_input_sample
    assert info.kwargs["attn_resolutions"] == (4,) and info.kwargs["ch_mult"] == (1, 2, 4)
    x, sigma = noisy_batch()
    with torch.no_grad():
        ours, theirs = net(x, sigma), model(x, sigma).sample
    assert theirs.abs().max() > 1.0  # a non-trivial output
    assert rel_err(ours, theirs) < 1e-4


def test_old_attention_names_and_weights_only_bin_files_load(diffusers, tmp_path):
    model = unet(diffusers, seed=3)
    scheduler(diffusers).save_pretrained(tmp_path / "scheduler")
    state = {k.replace("to_q.", "query.").replace("to_out.0.", "proj_attn."): v for k, v in model.state_dict().items()}
    (tmp_path / "unet").mkdir()
    torch.save(state, tmp_path / "unet" / "diffusion_pytorch_model.bin")  # read back with weights_only=True
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", **dict(model.config)}))
    net, _ = from_diffusers(tmp_path / "unet")  # finds ../scheduler
    x, sigma = noisy_batch(1)
    with torch.no_grad():
        assert rel_err(net(x, sigma), model(x, sigma).sample) < 1e-4


def test_weights_that_do_not_match_the_config_are_listed(diffusers, tmp_path):
    from safetensors.torch import load_file, save_file

    diffusers.ScoreSdeVePipeline(unet=unet(diffusers), scheduler=scheduler(diffusers)).save_pretrained(tmp_path)
    path = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    del state["conv_in.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["conv_out.bias"] = torch.zeros(4)
    save_file(state, path)
    with pytest.raises(ValueError) as err:
        from_diffusers(tmp_path)
    msg = str(err.value)
    assert "missing keys (1): conv_in.weight" in msg and "unexpected keys (1): extra.weight" in msg
    assert "conv_out.bias (4,) (expected (3,))" in msg and "\n" not in msg


# --- export -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net = our_net()
    out = to_diffusers(net, tmp_path_factory.mktemp("export") / "ncsnpp", SIGMA_MIN, SIGMA_MAX, snr=0.16)
    return net, out


def test_export_writes_a_scoresdeve_pipeline_folder(exported):
    net, out = exported
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                     "unet/diffusion_pytorch_model.safetensors"]
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["sigma_min"], sched["sigma_max"], sched["num_train_timesteps"], sched["snr"]) == \
        (SIGMA_MIN, SIGMA_MAX, N, 0.16)
    config = json.loads((out / "unet" / "config.json").read_text())
    assert config["center_input_sample"] is True and config["block_out_channels"] == [32, 64, 128]


def test_unet2dmodel_loads_the_export_and_computes_our_score(diffusers, exported):
    net, out = exported
    model = diffusers.UNet2DModel.from_pretrained(out, subfolder="unet", low_cpu_mem_usage=False).eval()
    x, sigma = noisy_batch(2)
    with torch.no_grad():
        ours, theirs = net(x, sigma), model(x, sigma).sample
    assert theirs.abs().max() > 1.0
    assert rel_err(theirs, ours) < 1e-4


def test_scoresdeve_pipeline_samples_from_the_export(diffusers, exported):
    _, out = exported
    pipe = diffusers.ScoreSdeVePipeline.from_pretrained(out, low_cpu_mem_usage=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.sigma_max == SIGMA_MAX
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (2, 16, 16, 3)
    assert torch.isfinite(torch.as_tensor(images)).all() and images.min() >= 0.0 and images.max() <= 1.0


def test_our_samplers_on_the_imported_network_equal_the_native_network(exported):
    """Export then import is lossless: same tensors, so PC and ODE samples agree bit for bit."""
    native, out = exported
    imported, info = from_diffusers(out)
    assert all(torch.equal(a, b) for a, b in zip(native.state_dict().values(), imported.state_dict().values()))
    sde = VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, N=N)
    assert (info.sde().sigma_min, info.sde().sigma_max, info.sde().N) == (sde.sigma_min, sde.sigma_max, sde.N)
    with torch.no_grad():
        for sample in (lambda net, s: pc_sample(s, score_fn_from_net(net, s), (2, 3, 16, 16), steps=4, snr=0.16,
                                                generator=torch.Generator().manual_seed(7)),
                       lambda net, s: ode_sample(s, score_fn_from_net(net, s), (2, 3, 16, 16), method="euler",
                                                 steps=4, generator=torch.Generator().manual_seed(7))):
            a, b = sample(native, sde).x, sample(imported, info.sde()).x
            assert torch.isfinite(a).all() and torch.equal(a, b)


def test_sgm_config_overrides_rebuild_the_same_network(exported):
    native, out = exported
    _, info = from_diffusers(out)
    cfg = info.sgm_config()
    assert cfg["sde"] == {"name": "ve", "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "N": N}
    rebuilt = NCSNpp(**cfg["model"]["kwargs"], image_size=16, num_channels=3, centered=cfg["data"]["centered"])
    rebuilt.load_state_dict(native.state_dict())  # strict: same layout


# --- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("time_embedding_type", "positional"),
    ("down_block_types", ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]),
    ("attention_head_dim", 8),
    ("norm_eps", 1e-5),
    ("act_fn", "mish"),
    ("class_embed_type", "timestep"),
    ("resnet_time_scale_shift", "scale_shift"),
    ("in_channels", 1),
])
def test_unsupported_diffusers_config_is_one_line_naming_the_key(tmp_path, key, value):
    config = {"_class_name": "UNet2DModel", **UNET, key: value}
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(config))  # no weights needed: refused first
    with pytest.raises(ValueError) as err:
        from_diffusers(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"diffusers config: {key}=") and "supported:" in msg and "\n" not in msg


def test_attention_narrower_than_128_and_foreign_schedulers_are_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    narrow = {**UNET, "down_block_types": ["SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"],
              "up_block_types": ["SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"]}
    (tmp_path / "unet" / "config.json").write_text(json.dumps(narrow))
    with pytest.raises(ValueError, match=r"down_block_types=.*widths >= 128 only \(width \[64\]"):
        from_diffusers(tmp_path)
    (tmp_path / "unet" / "config.json").write_text(json.dumps(UNET))
    with pytest.raises(ValueError, match="no scheduler_config.json found .* pass scheduler="):
        from_diffusers(tmp_path)
    with pytest.raises(ValueError, match="_class_name='DDPMScheduler' is not supported"):
        from_diffusers(tmp_path, scheduler={"_class_name": "DDPMScheduler"})


@pytest.mark.parametrize("overrides, key", [
    ({"progressive_input": "residual", "progressive": "none"}, "progressive"),  # our CIFAR-10 NCSN++ default
    ({"progressive_input": "residual"}, "progressive_input"),
    ({"embedding_type": "positional"}, "embedding_type"),  # DDPM++ and positional NCSN++ variants
    ({"resblock_type": "ddpm"}, "resblock_type"),
    ({"fir": False}, "fir"),
    ({"fir_kernel": (1, 1)}, "fir_kernel"),
    ({"skip_rescale": False}, "skip_rescale"),
    ({"num_channels": 1}, "num_channels"),
    ({"attn_resolutions": (8,)}, "attn_resolutions"),  # width 64 at 8x8
    ({"nonlinearity": "elu"}, "nonlinearity"),
])
def test_export_refuses_what_unet2dmodel_cannot_represent(tmp_path, overrides, key):
    with pytest.raises(ValueError) as err:
        to_diffusers(NCSNpp(**{**OURS, **overrides}), tmp_path / "out", SIGMA_MIN, SIGMA_MAX)
    msg = str(err.value)
    assert msg.startswith(f"to_diffusers: {key}=") and "cannot be represented" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()  # nothing written


def test_export_refuses_other_networks(tmp_path):
    with pytest.raises(ValueError, match="NCSNv2 has no diffusers counterpart"):
        to_diffusers(NCSNv2(nf=8, image_size=16, num_channels=3), tmp_path / "out", SIGMA_MIN, SIGMA_MAX)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
