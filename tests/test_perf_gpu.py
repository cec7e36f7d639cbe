"""On a CUDA GPU: bf16 autocast parity, channels_last, torch.compile and sampling (run by scripts/gpu_check.sh).

Every test here is skipped on a machine without CUDA (the CPU suite runs none of it).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from sgm_lightning.nets import NCSNpp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = dict(image_size=16, num_channels=3, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
            dropout=0.0)


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 comparisons in true fp32 (TF32 convs/matmuls round to 10 mantissa bits)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _net_and_batch(**kw):
    torch.manual_seed(0)
    net = NCSNpp(**TINY, **kw).cuda()
    with torch.no_grad():  # O(1) weights everywhere (fresh init zeroes the output convs)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(4, 3, 16, 16, device="cuda")
    return net, x, torch.tensor([0.05, 0.5, 5.0, 30.0], device="cuda")


def _out_and_grads(net, x, s):
    net.zero_grad(set_to_none=True)
    out = net.train()(x, s)
    out.float().square().mean().backward()
    return out.detach().float(), torch.cat([p.grad.float().flatten() for p in net.parameters()])


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_gpu_matches_cpu_in_fp32():
    net, x, s = _net_and_batch()
    out, g = _out_and_grads(net, x, s)
    out_cpu, g_cpu = _out_and_grads(net.cpu(), x.cpu(), s.cpu())
    assert _rel(out.cpu(), out_cpu) < 1e-4 and _rel(g.cpu(), g_cpu) < 1e-4


@pytest.mark.parametrize("recompute", [False, "norm", True])
def test_channels_last_and_recompute_match_fp32(recompute):
    net, x, s = _net_and_batch(memory_format="contiguous", recompute_norm_act=False)
    out, g = _out_and_grads(net, x, s)
    net.memory_format = "channels_last"
    for m in net.modules():
        if hasattr(m, "recompute_norm_act"):
            m.recompute_norm_act = recompute
    out_cl, g_cl = _out_and_grads(net, x, s)
    assert _rel(out_cl, out) < 1e-5 and _rel(g_cl, g) < 1e-4


def test_bf16_autocast_close_to_fp32():
    net, x, s = _net_and_batch()
    out, g = _out_and_grads(net, x, s)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out_bf, g_bf = _out_and_grads(net, x, s)
    assert _rel(out_bf, out) < 3e-2 and _rel(g_bf, g) < 5e-2  # bf16: 8 mantissa bits


def test_compile_matches_eager():
    net, x, s = _net_and_batch(memory_format="channels_last")
    out, g = _out_and_grads(net, x, s)
    compiled = torch.compile(net)
    out_c, g_c = _out_and_grads(compiled, x, s)
    assert _rel(out_c, out) < 1e-3 and _rel(g_c, g) < 1e-3


def test_sampling_on_the_gpu_does_not_depend_on_the_batch_size(tiny_export, tmp_path: Path):
    """``sgm sample --accelerator gpu`` (DDP strategy, one GPU): image k depends on (seed, k) only."""
    from sgm_lightning.cli import main

    ckpt = tiny_export("sample.steps=3")
    outs = []
    for name, batch in (("a", "8"), ("b", "3")):
        assert main(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / name), "--no-progress", "--n", "7",
                     "--batch-size", batch, "--seed", "5", "--accelerator", "gpu", "--devices", "1"]) == 0
        outs.append(np.load(tmp_path / name / "samples.npz")["x"].astype(int))
    assert outs[0].shape == (7, 8, 8, 1)
    assert np.mean(np.abs(outs[0] - outs[1]) <= 1) > 0.99  # uint8 images: GPU kernels may round differently
