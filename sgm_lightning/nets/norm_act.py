"""act(GroupNorm(x)) (and the conv after it) that keeps only x for the backward pass.

In every NCSN++ block the pair GroupNorm -> SiLU feeds a conv. Autograd would keep three
activations for it: x (for GroupNorm), GroupNorm(x) (for SiLU) and SiLU(...) (for the conv).
x is alive anyway (it is the residual / skip input) and the conv keeps its own input, so the
other two are pure overhead; the functions here drop them and recompute GroupNorm + SiLU from x
and the saved per-group statistics (one pointwise pass each) in the backward. Same forward
values, bit for bit; under ``torch.compile`` the plain ops are used (the compiler
rematerialises pointwise ops itself).

Recomputing trades time for memory, so it is a per-network choice (``recompute_norm_act`` of
:class:`~.ncsnpp.NCSNpp`, resolved by :func:`recompute_enabled`); ``"auto"`` takes the setting
measured best on the device type (docs/performance.md). On CPU that is ``"norm"``: recompute
GroupNorm only (one multiply-add pass) and keep the conv input, which brings a training step's
activation memory under 0.7x the official networks' for a few per cent of time, where the plain
ops stay at ~0.96x and full recomputation costs more time. Unmeasured devices keep the plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv3x3, conv3x3_backward

#: ``recompute_norm_act="auto"`` per device type (docs/performance.md); on CUDA only the plain path
#: has been timed (an H200, 2026-12-04), "norm" not yet
AUTO_RECOMPUTE: dict[str, bool | str] = {"cpu": "norm", "cuda": False}


def recompute_enabled(setting: bool | str, x: torch.Tensor) -> bool | str:
    """Resolve a ``recompute_norm_act`` setting (True / "norm" / False / "auto") for the device of ``x``."""
    if setting == "auto":
        return AUTO_RECOMPUTE.get(x.device.type, False)
    return setting


def _affine(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
            groups: int) -> torch.Tensor:
    """GroupNorm(x) again from its saved statistics: one fused multiply-add, x * scale + shift."""
    n, c = x.shape[:2]
    w = weight.view(1, groups, c // groups)
    scale = rstd.view(n, groups, 1) * w
    shift = bias.view(1, groups, c // groups) - mean.view(n, groups, 1) * scale
    return torch.addcmul(shift.view(n, c, 1, 1), x, scale.view(n, c, 1, 1))


def _gn_layout(x: torch.Tensor) -> torch.Tensor:
    """CUDA's GroupNorm kernels take NCHW-contiguous tensors only (``F.group_norm`` converts too);
    the CPU kernels also take channels_last."""
    return x if x.device.type == "cpu" else x.contiguous()


def _group_norm_stats(x, weight, bias, groups: int, eps: float):
    n, c = x.shape[:2]
    return torch.native_group_norm(_gn_layout(x), weight, bias, n, c, x[0, 0].numel(), groups, eps)  # (y, mean, rstd)


def _group_norm_backward(g_y, x, mean, rstd, weight, groups: int, need: tuple[bool, bool, bool]):
    n, c = x.shape[:2]
    return torch.ops.aten.native_group_norm_backward(_gn_layout(g_y), _gn_layout(x), mean, rstd, weight, n, c,
                                                     x[0, 0].numel(), groups, list(need))


def _same3x3(weight: torch.Tensor, padding: int) -> bool:
    """The conv is the 3x3 'same' one of :func:`conv3x3` (forward) and :func:`conv3x3_backward`."""
    return weight.shape[-2:] == (3, 3) and padding == 1


class _GroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        y, mean, rstd = _group_norm_stats(x, weight, bias, groups, eps)
        ctx.groups = groups
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return F.silu(y, inplace=True)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        y = _affine(x, mean, rstd, weight, bias, ctx.groups)
        g_y = torch.ops.aten.silu_backward(grad, y)
        g_x, g_w, g_b = _group_norm_backward(g_y, x, mean, rstd, weight, ctx.groups, ctx.needs_input_grad[:3])
        return g_x, g_w, g_b, None, None


def _lean_ok(norm: nn.GroupNorm, act: nn.Module, x: torch.Tensor) -> bool:
    """The recomputing path is exact for fp32/fp64 SiLU after an affine GroupNorm, outside autocast;
    taken in training mode only: in eval mode (likelihoods, guidance) autograd's own nodes compute
    just the gradients asked for, where a custom backward computes every parameter's too."""
    return (isinstance(act, nn.SiLU) and norm.training and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled(x.device.type) and norm.affine
            and x.dtype == norm.weight.dtype and (x.requires_grad or norm.weight.requires_grad))


def norm_act(norm: nn.GroupNorm, act: nn.Module, x: torch.Tensor, recompute: bool = True) -> torch.Tensor:
    """``act(norm(x))``; memory-lean (``recompute``) when ``act`` is SiLU and gradients are recorded."""
    if recompute and _lean_ok(norm, act, x):
        return _GroupNormSiLU.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps)
    return act(norm(x))


class _GroupNormSiLUConv(torch.autograd.Function):
    """conv(dropout(silu(group_norm(x)))) keeping x, the statistics, the dropout mask and, unless
    ``keep_input`` is False, the conv input (then only GroupNorm(x) is recomputed)."""

    @staticmethod
    def forward(ctx, x, gn_w, gn_b, weight, bias, mask, groups: int, eps: float, padding: int, p: float,
                keep_input: bool):
        y, mean, rstd = _group_norm_stats(x, gn_w, gn_b, groups, eps)
        a = F.silu(y, inplace=True)  # y is recomputed in the backward
        if mask is not None:  # inverted dropout with a bool mask (1 byte per element kept)
            a = a.mul_(mask).mul_(1.0 / (1.0 - p))
        ctx.groups, ctx.padding, ctx.p = groups, padding, p
        ctx.save_for_backward(x, gn_w, gn_b, weight, mask, mean, rstd, a if keep_input else None)
        return conv3x3(a, weight, bias) if _same3x3(weight, padding) else F.conv2d(a, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, gn_w, gn_b, weight, mask, mean, rstd, a = ctx.saved_tensors
        need = ctx.needs_input_grad
        y = _affine(x, mean, rstd, gn_w, gn_b, ctx.groups)
        if a is None:
            a = F.silu(y)
            if mask is not None:
                a = a.mul_(mask).mul_(1.0 / (1.0 - ctx.p))
        mask3 = (any(need[:3]), need[3], need[4])
        if _same3x3(weight, ctx.padding):
            g_a, g_w, g_b = conv3x3_backward(grad, a, weight, mask3)
        else:
            g_a, g_w, g_b = torch.ops.aten.convolution_backward(
                grad, a, weight, [weight.shape[0]], [1, 1], [ctx.padding] * 2, [1, 1], False, [0, 0], 1, list(mask3))
        del a
        g_x = g_gw = g_gb = None
        if any(need[:3]):
            if mask is not None:
                g_a = g_a.mul_(mask).mul_(1.0 / (1.0 - ctx.p))
            g_y = torch.ops.aten.silu_backward(g_a, y)
            g_x, g_gw, g_gb = _group_norm_backward(g_y, x, mean, rstd, gn_w, ctx.groups, need[:3])
        return g_x, g_gw, g_gb, g_w, g_b, None, None, None, None, None, None


def norm_act_conv(norm: nn.GroupNorm, act: nn.Module, conv: nn.Conv2d, x: torch.Tensor,
                  dropout: nn.Dropout | None = None, recompute: bool | str = True) -> torch.Tensor:
    """``conv(dropout(act(norm(x))))`` for a stride-1 'same' conv.

    ``recompute=True``: when training with SiLU in full precision (no autocast, not compiling),
    the conv input is not stored: backward recomputes GroupNorm (from the saved mean and 1/std),
    SiLU and the dropout product from x (the conv weight gradient needs them), so each such pair
    keeps x and a bool mask instead of three float activations. ``recompute="norm"``: the conv
    input is kept and only GroupNorm(x) is recomputed (one fused multiply-add), so each pair keeps
    one float activation less than autograd. The dropout mask is drawn here (inverted dropout as
    ``nn.Dropout``, same distribution, a different random stream). Otherwise the plain ops run.
    """
    p = dropout.p if (dropout is not None and dropout.training) else 0.0
    lean = (bool(recompute) and _lean_ok(norm, act, x) and conv.bias is not None and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding == (conv.kernel_size[0] // 2,) * 2)
    if not lean:
        h = act(norm(x))
        return conv(dropout(h) if dropout is not None else h)
    mask = None
    if p > 0:  # keep with probability 1 - p (to 2^-24); 1.8x faster on CPU than bernoulli_
        mask = torch.rand_like(x) >= p
    return _GroupNormSiLUConv.apply(x, norm.weight, norm.bias, conv.weight, conv.bias, mask, norm.num_groups,
                                    norm.eps, conv.padding[0], p, recompute == "norm")
