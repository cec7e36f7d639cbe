"""model.channels_last and model.compile: faster layouts, the same function and the same checkpoints."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sgm_lightning.checkpoint import build_net
from sgm_lightning.config import data_shape, load_config
from sgm_lightning.training.module import ScoreModule

DIGITS = ["model.kwargs.nf=8", "model.kwargs.ch_mult=[1,2]", "model.kwargs.attn_resolutions=[]",
          "data.image_size=8"]


def net_of(*overrides):
    cfg = load_config("digits", [*DIGITS, *overrides])
    torch.manual_seed(0)
    return cfg, build_net(cfg.model, data_shape(cfg.data), cfg.sde, cfg.data.centered).eval()


def ncsnv2(channels_last):
    model = OmegaConf.create({"arch": "ncsnv2", "preset": None, "kwargs": {"nf": 8}, "precond": "none",
                              "channels_last": channels_last})
    torch.manual_seed(0)
    return build_net(model, (1, 8, 8), None, True).eval()


@pytest.mark.parametrize("arch", ["ncsnpp", "ncsnv2"])
def test_channels_last_computes_the_same_function(arch):
    if arch == "ncsnv2":  # its weights are converted
        plain, fast = ncsnv2(None), ncsnv2(True)
        conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    else:  # NCSN++ converts its activations itself
        _, plain = net_of("model.channels_last=false")
        _, fast = net_of("model.channels_last=true")
        assert plain.memory_format == "contiguous" and fast.memory_format == "channels_last"
    fast.load_state_dict(plain.state_dict())
    x, sigma = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0.1, 1.0, 5, 17])
    with torch.no_grad():
        torch.testing.assert_close(fast(x, sigma), plain(x, sigma), rtol=1e-5, atol=1e-5)


def test_channels_last_on_points_is_refused():
    with pytest.raises(ValueError, match="model.channels_last: is for image networks"):
        load_config("toy_mixture", ["model.channels_last=true"])


def test_compile_trains_the_same_parameters_with_the_same_loss():
    cfg = load_config("toy_mixture", ["model.kwargs.hidden=16", "model.compile=true"])
    compiled = ScoreModule(cfg)
    plain = ScoreModule(load_config("toy_mixture", ["model.kwargs.hidden=16"]))
    plain.net.load_state_dict(compiled.net.state_dict())
    assert compiled.state_dict().keys() == plain.state_dict().keys()  # checkpoints do not change
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    u = torch.rand(64, generator=torch.Generator().manual_seed(1))
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    a, _ = compiled.loss_terms(x0, u=u, z=z)
    b, _ = plain.loss_terms(x0, u=u, z=z)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    a.mean().backward()
    assert all(p.grad is not None for p in compiled.net.parameters())  # gradients reach the real weights


def test_fused_adam_is_the_cpu_default_and_takes_the_for_loop_steps():
    """optim.implementation=auto picks PyTorch's fused Adam on CPU; three steps of it land where the
    per-tensor loop lands (same update, different rounding: 1e-6 relative after three steps)."""
    torch.manual_seed(0)
    modules = {impl: ScoreModule(load_config("digits", [*DIGITS, "optim.warmup_steps=0",
                                                         f"optim.implementation={impl}"]))
               for impl in ("auto", "for_loop", "foreach")}
    for m in modules.values():
        m.net.load_state_dict(modules["auto"].net.state_dict())
    opts = {impl: m.configure_optimizers()["optimizer"] for impl, m in modules.items()}
    assert opts["auto"].defaults["fused"] and not opts["for_loop"].defaults["foreach"]
    assert opts["foreach"].defaults["foreach"] and not opts["foreach"].defaults["fused"]
    init = torch.cat([p.detach().flatten() for p in modules["auto"].net.parameters()])
    g = torch.Generator().manual_seed(3)
    grads = [[torch.randn(p.shape, generator=g) for p in modules["auto"].net.parameters()] for _ in range(3)]
    for impl, m in modules.items():
        for step in grads:
            for p, gp in zip(m.net.parameters(), step):
                p.grad = gp.clone()
            opts[impl].step()
    ref = torch.cat([p.detach().flatten() for p in modules["for_loop"].net.parameters()])
    for impl in ("auto", "foreach"):
        got = torch.cat([p.detach().flatten() for p in modules[impl].net.parameters()])
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    assert (ref - init).abs().max() > 1e-3  # the steps did move the weights (lr 2e-3, no warm-up)
