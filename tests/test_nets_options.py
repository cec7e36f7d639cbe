"""Every NCSN++ option builds and trains on a tiny input; channels_last, bf16 autocast and
activation checkpointing agree with the plain fp32 network; NCSNv2 variants run."""

from __future__ import annotations

import itertools

import pytest
import torch

from sgm_lightning.nets import NCSNpp, NCSNv2
from sgm_lightning.nets import fir


TINY = dict(image_size=8, num_channels=2, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
            init_scale=0.1)


def _cases():
    """All 18 (progressive, progressive_input, combine) triples; the other options cycle so each of
    their values meets several pyramid settings."""
    cycle = itertools.cycle(itertools.product(("biggan", "ddpm"), (True, False), ("fourier", "positional"),
                                              (True, False)))
    cases = []
    for i, (prog, prog_in, comb) in enumerate(itertools.product(("none", "output_skip", "residual"),
                                                                ("none", "input_skip", "residual"), ("sum", "cat"))):
        block, use_fir, emb, cond = next(cycle)
        cases.append(dict(progressive=prog, progressive_input=prog_in, progressive_combine=comb, resblock_type=block,
                          fir=use_fir, embedding_type=emb, conditional=cond, skip_rescale=i % 3 != 0,
                          resamp_with_conv=i % 4 != 1, centered=i % 2 == 0, scale_by_sigma=emb == "fourier",
                          dropout=0.1 * (i % 2), fir_kernel=(1, 3, 3, 1) if i % 5 else (1, 1)))
    return cases


@pytest.mark.parametrize("opts", _cases(), ids=lambda o: "-".join(str(v) for v in list(o.values())[:6]))
def test_option_combination_trains(opts):
    torch.manual_seed(0)
    net = NCSNpp(**TINY, **opts).train()
    x = torch.rand(2, 2, 8, 8)
    labels = torch.tensor([0.3, 4.0]) if opts["embedding_type"] == "fourier" else torch.tensor([10.0, 900.0])
    out = net(x, labels)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in net.named_parameters():
        if not opts["conditional"] and "temb_proj" in name:
            assert p.grad is None  # the official blocks own the unused projection too
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_fir_resampling_matches_upfirdn_definition():
    """FIR down/up-sampling equal the upfirdn2d definition (zero-insert, pad, convolve, decimate)
    written out with explicit loops on a random image, for an asymmetric kernel."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    k1 = torch.tensor([1.0, 2.0, 4.0, 1.0], dtype=torch.float64)

    def upfirdn(x, k, up, down, p0, p1):
        h = x.shape[-1]
        u = torch.zeros(h * up, h * up, dtype=x.dtype)
        u[::up, ::up] = x[0, 0]
        u = torch.nn.functional.pad(u, (p0, p1, p0, p1))
        kf = torch.outer(k, k).flip(0, 1)
        n = u.shape[0] - len(k) + 1
        out = torch.stack([torch.stack([(u[i:i + len(k), j:j + len(k)] * kf).sum() for j in range(n)])
                           for i in range(n)])
        return out[::down, ::down]

    kd = fir.make_kernel(k1.tolist()).double()
    torch.testing.assert_close(fir.downsample(x, kd)[0, 0], upfirdn(x, kd[0] / kd[0].sum(), 1, 2, 1, 1))
    ku = fir.make_kernel(k1.tolist(), gain=4.0).double()
    k1n = k1 / k1.sum() * 2  # separable share of the gain 4
    torch.testing.assert_close(fir.upsample(x, ku)[0, 0], upfirdn(x, k1n, 2, 1, 2, 1))


def test_fir_upsample_keeps_constants_and_downsample_averages():
    k = fir.make_kernel([1, 3, 3, 1])
    ones = torch.ones(1, 3, 8, 8)
    up = fir.upsample(ones, fir.make_kernel([1, 3, 3, 1], gain=4.0))
    assert torch.allclose(up[..., 1:-1, 1:-1], torch.ones(1, 3, 14, 14))  # interior: constants preserved
    assert torch.allclose(fir.downsample(ones, k)[..., 1:-1, 1:-1], torch.ones(1, 3, 2, 2))


def _pair(**kw):
    torch.manual_seed(0)
    net = NCSNpp(**{**TINY, "dropout": 0.0, **kw}).eval()
    return net, torch.rand(3, 2, 8, 8), torch.tensor([0.2, 2.0, 20.0])


def test_channels_last_matches_fp32():
    net, x, s = _pair(progressive="output_skip", progressive_input="input_skip")
    ref = net(x, s)
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.contiguous(memory_format=torch.channels_last), s)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_bf16_autocast_close_to_fp32():
    net, x, s = _pair()
    ref = net(x, s)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, s)
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 3e-2, rel  # bf16 has 8 mantissa bits: ~4e-3 per op


def test_activation_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    a = NCSNpp(**TINY, dropout=0.1)
    b = NCSNpp(**TINY, dropout=0.1, checkpoint_levels=True)
    b.load_state_dict(a.state_dict())
    x, s = torch.rand(2, 2, 8, 8), torch.tensor([0.5, 5.0])
    grads = []
    for net in (a, b):
        torch.manual_seed(1)  # same dropout masks: checkpointing replays the RNG state
        net.train()(x, s).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_forward_has_no_graph_breaks():
    """torch.compile can capture the whole forward in one graph (traced by dynamo, not compiled)."""
    net, x, s = _pair(progressive="residual", progressive_input="input_skip", progressive_combine="cat")
    explanation = torch._dynamo.explain(net)(x, s)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("size, variant, n_down", [(16, "64", 1), (16, "128", 2), (16, "256", 3)])
def test_ncsnv2_variants_train(size, variant, n_down):
    torch.manual_seed(0)
    net = NCSNv2(image_size=size, num_channels=1, nf=4, variant=variant)
    x, idx = torch.rand(2, 1, size, size), torch.tensor([0, 200])
    out = net(x, idx)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    deepest = getattr(net, net.stage_names[-1])[-1]
    assert deepest.conv2.weight.shape[0] == net.config["nf"] * (4 if variant != "64" else 2)
    with pytest.raises(ValueError, match="image_size"):
        NCSNv2(image_size=2**n_down + 1, nf=4, variant=variant)


def test_ncsnv2_output_is_divided_by_sigma():
    """NCSNv2 technique 3: s(x, sigma) = f(x) / sigma, so sigma * s does not depend on sigma."""
    torch.manual_seed(0)
    net = NCSNv2(image_size=8, num_channels=1, nf=4).eval()
    x = torch.rand(1, 1, 8, 8).repeat(2, 1, 1, 1)
    sig = torch.tensor([0.05, 7.0])
    out = net(x, sig)
    torch.testing.assert_close(out[0] * 0.05, out[1] * 7.0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net(x, torch.tensor([0, 231])), net(x, net.sigmas[[0, 231]].float()))


@pytest.mark.parametrize("autocast", [False, True])
def test_lean_groupnorm_silu_matches_autograd(autocast):
    """The recomputing GroupNorm+SiLU gives the plain ops' values and gradients."""
    from sgm_lightning.nets.norm_act import norm_act

    torch.manual_seed(0)
    norm, act = torch.nn.GroupNorm(4, 16, eps=1e-6), torch.nn.SiLU()
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2), norm.bias.normal_(0.0, 0.2)
    x = torch.randn(3, 16, 5, 5, requires_grad=True)
    g = torch.randn(3, 16, 5, 5)
    results = []
    for lean in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = norm_act(norm, act, x) if lean else act(norm(x))
        grads = torch.autograd.grad(y, [x, norm.weight, norm.bias], g)
        results.append((y, *grads))
    for plain, lean in zip(*results):
        torch.testing.assert_close(lean, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("recompute", [True, "norm"])
@pytest.mark.parametrize("p", [0.0, 0.4])
def test_lean_norm_act_conv_gradients(p, recompute):
    """GroupNorm -> SiLU -> dropout -> conv without stored activations: exact float64 gradients."""
    from sgm_lightning.nets.norm_act import norm_act_conv

    torch.manual_seed(0)
    norm, conv = torch.nn.GroupNorm(2, 4, eps=1e-6).double(), torch.nn.Conv2d(4, 3, 3, padding=1).double()
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2), norm.bias.normal_(0.0, 0.2)
    drop = torch.nn.Dropout(p).train()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)

    def f(x, gw, gb, w, b):
        torch.manual_seed(3)  # the same mask on every call
        return norm_act_conv(norm, torch.nn.SiLU(), conv, x, drop, recompute=recompute)

    params = [norm.weight, norm.bias, conv.weight, conv.bias]
    assert torch.autograd.gradcheck(f, (x, *params))  # f reads the same parameter tensors
    y = f(x, *params)
    if p == 0:
        torch.testing.assert_close(y, conv(torch.nn.functional.silu(norm(x))), rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_lean_dropout_keeps_one_minus_p_and_scales_by_its_inverse(p):
    """Through an identity 1x1 conv the output is mask * SiLU(GroupNorm(x)) / (1 - p): the kept
    fraction of 2^18 units is 1 - p within 5 standard deviations, each kept unit exactly scaled."""
    from sgm_lightning.nets.norm_act import norm_act_conv

    torch.manual_seed(0)
    norm, conv = torch.nn.GroupNorm(2, 4, eps=1e-6), torch.nn.Conv2d(4, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1)), conv.bias.zero_()
    x = torch.randn(16, 4, 64, 64, requires_grad=True)
    y = norm_act_conv(norm, torch.nn.SiLU(), conv, x, torch.nn.Dropout(p).train(), recompute="norm").detach()
    a = torch.nn.functional.silu(norm(x)).detach()
    kept = y != 0
    n = kept.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    torch.testing.assert_close(y[kept], a[kept] / (1 - p), rtol=1e-6, atol=0)
