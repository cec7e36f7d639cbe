"""NCSN++ / DDPM++ construction, forward/backward and bad-input checks (small widths, CPU)."""

from __future__ import annotations

import pytest
import torch

from sgm_lightning.nets import PRESETS, NCSNpp, build_network


def _tiny(**kw):
    cfg = dict(image_size=8, num_channels=2, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
               dropout=0.0, init_scale=0.1)
    cfg.update(kw)
    return NCSNpp(**cfg)


def test_digits_preset_forward_backward_finite():
    torch.manual_seed(0)
    net = build_network(**PRESETS["ncsnpp_digits"])
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.5e6 < n_params < 3e6
    x, sigma = torch.rand(4, 1, 16, 16), torch.tensor([0.01, 0.5, 3.0, 20.0])
    out = net(x, sigma)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_scale_by_sigma_divides_output():
    torch.manual_seed(0)
    a, b = _tiny(scale_by_sigma=True), _tiny(scale_by_sigma=False)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x, sigma = torch.rand(3, 2, 8, 8), torch.tensor([0.1, 1.0, 7.0])
    torch.testing.assert_close(a(x, sigma) * sigma[:, None, None, None], b(x, sigma), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(attn_resolutions=(3,)), "attn_resolutions"),
        (dict(image_size=6, ch_mult=(1, 2, 2)), "image_size"),
        (dict(progressive="bogus"), "progressive"),
        (dict(resblock_type="unet"), "resblock_type"),
        (dict(embedding_type="learned"), "embedding_type"),
        (dict(progressive_combine="max"), "progressive_combine"),
        (dict(frobnicate=1), "frobnicate"),
        (dict(nf=0), "nf"),
    ],
)
def test_impossible_config_names_the_option(kw, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kw)


def test_build_network_rejects_unknown_arch():
    with pytest.raises(ValueError, match="arch"):
        build_network("resnet50")
