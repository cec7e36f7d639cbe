"""The speed/memory switches of NCSN++ change how, never what: same outputs and gradients."""

import pytest
import torch
import torch.nn.functional as F

from sgm_lightning.nets import NCSNpp
from sgm_lightning.nets.attention import AttnBlock
from sgm_lightning.nets.fir import naive_upsample

TINY = dict(image_size=8, num_channels=2, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
            dropout=0.0)


def _grads(net, x, s):
    torch.manual_seed(1)
    out = net.train()(x, s)
    out.square().mean().backward()
    return out.detach(), torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


@pytest.mark.parametrize("kind", [dict(), dict(resblock_type="ddpm", fir=False, embedding_type="positional",
                                                progressive_input="none", scale_by_sigma=False)])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("recompute", [True, "norm"])
def test_recompute_and_layout_give_the_plain_networks_gradients(kind, memory_format, recompute):
    """float64, so the only differences are rounding (recomputed GroupNorm: one fused multiply-add)."""
    torch.manual_seed(0)
    ref = NCSNpp(**TINY, **kind, recompute_norm_act=False, memory_format="contiguous").double()
    net = NCSNpp(**TINY, **kind, recompute_norm_act=recompute, memory_format=memory_format).double()
    net.load_state_dict(ref.state_dict())
    with torch.no_grad():  # O(1) weights everywhere (fresh init zeroes the output convs)
        for p, q in zip(ref.parameters(), net.parameters()):
            p.add_(0.1 * torch.randn_like(p)), q.copy_(p)
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    s = torch.tensor([0.5, 5.0], dtype=torch.float64) if "embedding_type" not in kind else torch.tensor([3.0, 700.0])
    out_ref, g_ref = _grads(ref, x, s)
    out, g = _grads(net, x, s)
    assert out.is_contiguous()  # the caller's layout comes back
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)


def test_bad_switch_values_name_the_option():
    with pytest.raises(ValueError, match="recompute_norm_act"):
        NCSNpp(**TINY, recompute_norm_act="sometimes")
    with pytest.raises(ValueError, match="memory_format"):
        NCSNpp(**TINY, memory_format="nhwc")


@pytest.mark.parametrize("channels_last", [False, True])
def test_nearest_upsampling_is_interpolate(channels_last):
    x = torch.randn(2, 3, 4, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(naive_upsample(x), F.interpolate(x, scale_factor=2, mode="nearest"), rtol=0, atol=0)


def test_attention_is_the_official_two_einsum_form():
    torch.manual_seed(0)
    blk = AttnBlock(8, skip_rescale=True, init_scale=1.0).double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    h = blk.norm(x)
    wq, wk, wv = blk.qkv.weight[:, :, 0, 0].chunk(3)
    bq, bk, bv = blk.qkv.bias.chunk(3)
    q, k, v = (torch.einsum("bchw,oc->bohw", h, w) + b[:, None, None] for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    att = torch.einsum("bchw,bcij->bhwij", q, k).reshape(2, 4, 4, 16) * 8**-0.5
    att = att.softmax(-1).reshape(2, 4, 4, 4, 4)
    out = torch.einsum("bhwij,bcij->bchw", att, v)
    out = torch.einsum("bchw,oc->bohw", out, blk.proj.weight[:, :, 0, 0]) + blk.proj.bias[:, None, None]
    torch.testing.assert_close(blk(x), (x + out) / 2**0.5, rtol=1e-10, atol=1e-12)
    xcl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(blk(xcl), blk(x), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of gpu_check.sh")
def test_gpu_check_says_no_gpu_on_a_cpu_machine():
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0 and proc.stdout.strip() == "no GPU", proc.stdout + proc.stderr


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv1x1_as_matmul_is_the_convolution(channels_last):
    from sgm_lightning.nets.layers import conv1x1

    torch.manual_seed(0)
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = conv1x1(x.contiguous(memory_format=layout), w, b)
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out, F.conv2d(x, w, b), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, w, b: conv1x1(x.contiguous(memory_format=layout), w, b), (x, w, b))


def _winograd_case(batch=16, size=16, layout=torch.contiguous_format, cin=64, cout=72):
    torch.manual_seed(0)
    x = torch.randn(batch, cin, size, size).contiguous(memory_format=layout).requires_grad_(True)
    w = (torch.randn(cout, cin, 3, 3) / (9 * cin) ** 0.5).requires_grad_(True)
    b = torch.randn(cout, requires_grad=True)
    return x, w, b


def _ops_called(fn) -> list:
    """(op name, args) of every aten op ``fn`` runs (the backward included when it calls autograd)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append((func.__name__, args))
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return calls


def _rel(a, r):
    return float((a.double() - r).abs().max() / r.abs().max())


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this torch has no NNPACK")
def test_winograd_conv3x3_is_the_convolution_and_only_where_chosen():
    """Winograd forward and gradients on batches >= 16 of >= 256-pixel maps with >= 64 channels in
    and out (>= 128 for the weight gradient): within 3e-5 of float64 in the output and the input and
    weight gradients, 1e-5 in the bias gradient (a plain sum); plain oneDNN elsewhere."""
    from sgm_lightning.nets.layers import Conv2d, conv3x3

    x, w, b = _winograd_case(cin=128, cout=136)
    out = conv3x3(x, w, b)
    assert type(out.grad_fn).__name__ == "_Conv3x3Backward"
    g = torch.randn_like(out)
    grads = []
    calls = _ops_called(lambda: grads.extend(torch.autograd.grad(out, (x, w, b), g)))
    names = [name for name, _ in calls]
    assert names.count("_nnpack_spatial_convolution.default") == 1  # the input gradient
    assert "convolution_backward.default" not in names and names.count("bmm.default") == 1  # F(3x3, 4x4)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = F.conv2d(x64, w64, b64, padding=1)
    refs = torch.autograd.grad(ref, (x64, w64, b64), g.double())
    assert _rel(out, ref) < 3e-5
    assert _rel(grads[0], refs[0]) < 3e-5 and _rel(grads[1], refs[1]) < 3e-5
    assert _rel(grads[2], refs[2]) < 1e-5
    layer = Conv2d(128, 72, 3, padding=1)
    assert type(layer(x).grad_fn).__name__ == "_Conv3x3Backward"  # the module takes it too
    for case in (_winograd_case(batch=15), _winograd_case(size=8), _winograd_case(layout=torch.channels_last),
                 _winograd_case(cin=63), _winograd_case(cout=1)):
        assert type(conv3x3(*case).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.backends.nnpack.flags(enabled=False):
        assert type(conv3x3(x, w, b).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():  # the same numbers without autograd
        torch.testing.assert_close(conv3x3(x, w, b), out.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(16, 64, 72, 20, 24), (2, 3, 5, 8, 4)])
def test_winograd_weight_gradient_is_the_convolutions(shape):
    """F(3x3, 4x4) over 4x4 tiles of the output gradient: within 3e-5 of float64 (oneDNN: ~5e-6)."""
    from sgm_lightning.nets.layers import conv3x3_weight_grad

    b, cin, cout, h, w = shape
    torch.manual_seed(0)
    x, g = torch.randn(b, cin, h, w), torch.randn(b, cout, h, w)
    ref = torch.ops.aten.convolution_backward(g.double(), x.double(), torch.zeros(cout, cin, 3, 3, dtype=torch.float64),
                                              None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1]
    got = conv3x3_weight_grad(g, x)
    assert got.shape == (cout, cin, 3, 3) and got.is_contiguous()
    assert _rel(got, ref) < 3e-5


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this torch has no NNPACK")
@pytest.mark.parametrize("case, nnpack_input_grad, winograd_weight_grad", [
    (dict(size=32, cin=136, cout=128), True, False),  # batch 16, more input than output channels at 32x32
    (dict(size=18, cin=128, cout=136), True, False),  # sides not a multiple of 4
    (dict(cin=64, cout=136), True, False),  # narrower than 128 channels
    (dict(batch=4, cin=128, cout=136), False, True),  # oneDNN forward, Winograd weight gradient
    (dict(batch=4, size=32, cin=136, cout=128), False, True),
])
def test_winograd_backward_only_where_chosen(case, nnpack_input_grad, winograd_weight_grad):
    """Each gradient takes Winograd only where it measured faster; oneDNN computes the rest."""
    from sgm_lightning.nets.layers import conv3x3

    args = _winograd_case(**case)
    out = conv3x3(*args)
    assert type(out.grad_fn).__name__ == "_Conv3x3Backward"
    calls = _ops_called(lambda: torch.autograd.grad(out, args, torch.ones_like(out)))
    names = [name for name, _ in calls]
    assert names.count("_nnpack_spatial_convolution.default") == int(nnpack_input_grad)
    assert names.count("bmm.default") == int(winograd_weight_grad)
    (bw_args,) = [a for name, a in calls if name == "convolution_backward.default"]
    assert list(bw_args[-1]) == [not nnpack_input_grad, not winograd_weight_grad, not winograd_weight_grad]


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this torch has no NNPACK")
@pytest.mark.parametrize("recompute", [True, "norm"])
def test_lean_norm_act_conv_takes_the_winograd_backward(recompute):
    """The memory-lean GroupNorm-SiLU-conv backs its conv through the same Winograd gradients:
    its gradients are within 3e-5 of float64's."""
    from torch import nn

    from sgm_lightning.nets.layers import conv, group_norm
    from sgm_lightning.nets.norm_act import norm_act_conv

    torch.manual_seed(0)
    norm, act, layer = group_norm(128), nn.SiLU(), conv(128, 128)
    x = torch.randn(16, 128, 16, 16, requires_grad=True)
    params = (x, norm.weight, norm.bias, layer.weight, layer.bias)
    out = norm_act_conv(norm, act, layer, x, recompute=recompute)
    assert type(out.grad_fn).__name__ == "_GroupNormSiLUConvBackward"
    g = torch.randn_like(out)
    grads = []
    names = [name for name, _ in _ops_called(lambda: grads.extend(torch.autograd.grad(out, params, g)))]
    assert names.count("_nnpack_spatial_convolution.default") == 1 and names.count("bmm.default") == 1
    norm64, layer64 = group_norm(128).double(), conv(128, 128).double()
    norm64.load_state_dict(norm.state_dict()), layer64.load_state_dict(layer.state_dict())
    x64 = x.detach().double().requires_grad_(True)
    ref = layer64(F.silu(norm64(x64)))
    refs = torch.autograd.grad(ref, (x64, norm64.weight, norm64.bias, layer64.weight, layer64.bias), g.double())
    assert max(_rel(a, r) for a, r in zip(grads, refs)) < 3e-5


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this torch has no NNPACK")
def test_eval_mode_gradients_skip_the_weights():
    """In eval mode (likelihoods, guidance) the convolutions keep autograd's own backward: a gradient
    with respect to the input alone computes no weight gradient (custom backwards compute all)."""
    from torch import nn

    from sgm_lightning.nets.layers import Conv2d, group_norm
    from sgm_lightning.nets.norm_act import norm_act_conv

    x = _winograd_case(cin=128)[0]
    layer, norm = Conv2d(128, 136, 3, padding=1), group_norm(128)
    for train in (True, False):
        layer.train(train), norm.train(train)
        for out in (layer(x), norm_act_conv(norm, nn.SiLU(), layer, x, recompute="norm")):
            calls = _ops_called(lambda out=out: torch.autograd.grad(out, x, torch.ones_like(out)))
            names = [name for name, _ in calls]
            masks = [list(a[-1]) for name, a in calls if name == "convolution_backward.default"]
            if train:  # the Winograd weight gradient ran, although only x's gradient was asked for
                assert names.count("bmm.default") == 1
            else:
                assert "bmm.default" not in names and masks == [[True, False, False]]
