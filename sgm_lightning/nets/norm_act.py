"""act(GroupNorm(x)) that keeps only x for the backward pass (recomputes the rest).

In every NCSN++ block the pair GroupNorm -> SiLU feeds a conv. Autograd would keep three
activations for it: x (for GroupNorm), GroupNorm(x) (for SiLU) and SiLU(...) (for the conv).
x is alive anyway (it is the residual / skip input) and the conv keeps its own input, so the
GroupNorm output is pure overhead; this function drops it and recomputes GroupNorm + SiLU
(two cheap pointwise passes) in the backward. Same forward values, bit for bit; under
``torch.compile`` the plain ops are used (the compiler rematerialises pointwise ops itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _GroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        ctx.groups, ctx.eps = groups, eps
        ctx.autocast = (x.device.type, torch.is_autocast_enabled(x.device.type),
                        torch.get_autocast_dtype(x.device.type))
        ctx.save_for_backward(x, weight, bias)
        return F.silu(F.group_norm(x, groups, weight, bias, eps))

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        inputs = [t.detach().requires_grad_(need) for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3])]
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            y = F.silu(F.group_norm(inputs[0], ctx.groups, inputs[1], inputs[2], ctx.eps))
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(y, wanted, grad) if wanted else ())
        return (*(next(grads) if t.requires_grad else None for t in inputs), None, None)


def norm_act(norm: nn.GroupNorm, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(norm(x))``; memory-lean when ``act`` is SiLU and gradients are being recorded."""
    if (isinstance(act, nn.SiLU) and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and norm.affine and (x.requires_grad or norm.weight.requires_grad)):
        return _GroupNormSiLU.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps)
    return act(norm(x))


class _GroupNormSiLUConv(torch.autograd.Function):
    """conv(dropout(silu(group_norm(x)))) keeping only x (and the dropout mask) for backward."""

    @staticmethod
    def forward(ctx, x, gn_w, gn_b, weight, bias, mask, groups: int, eps: float, padding: int, p: float):
        a = F.silu(F.group_norm(x, groups, gn_w, gn_b, eps))
        if mask is not None:  # inverted dropout with a bool mask (1 byte per element kept)
            a = a * mask * (1.0 / (1.0 - p))
        ctx.groups, ctx.eps, ctx.padding, ctx.has_mask, ctx.p = groups, eps, padding, mask is not None, p
        ctx.save_for_backward(x, gn_w, gn_b, weight, mask)
        return F.conv2d(a, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, gn_w, gn_b, weight, mask = ctx.saved_tensors
        need = ctx.needs_input_grad
        inputs = [t.detach().requires_grad_(n) for t, n in zip((x, gn_w, gn_b), need[:3])]
        with torch.enable_grad():
            a = F.silu(F.group_norm(inputs[0], ctx.groups, inputs[1], inputs[2], ctx.eps))
            if ctx.has_mask:
                a = a * mask * (1.0 / (1.0 - ctx.p))
        g_a, g_w, g_b = torch.ops.aten.convolution_backward(
            grad, a.detach(), weight, [weight.shape[0]], [1, 1], [ctx.padding] * 2, [1, 1], False, [0, 0], 1,
            [any(need[:3]), need[3], need[4]])
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(a, wanted, g_a) if wanted else ())
        return (*(next(grads) if t.requires_grad else None for t in inputs), g_w, g_b, None, None, None, None, None)


def norm_act_conv(norm: nn.GroupNorm, act: nn.Module, conv: nn.Conv2d, x: torch.Tensor,
                  dropout: nn.Dropout | None = None) -> torch.Tensor:
    """``conv(dropout(act(norm(x))))`` for a stride-1 'same' conv.

    When training with SiLU in full precision (no autocast, not compiling), the conv input is not
    stored: backward recomputes GroupNorm, SiLU and the dropout product from x (the conv weight
    gradient needs them), so each such pair keeps x and a bool mask instead of three float
    activations. The dropout mask is drawn here (inverted dropout as ``nn.Dropout``, same
    distribution, a different random stream). Otherwise the plain ops run.
    """
    p = dropout.p if (dropout is not None and dropout.training) else 0.0
    lean = (isinstance(act, nn.SiLU) and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled(x.device.type) and norm.affine and conv.bias is not None
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding == (conv.kernel_size[0] // 2,) * 2)
    if not lean:
        h = act(norm(x))
        return conv(dropout(h) if dropout is not None else h)
    mask = None
    if p > 0:
        mask = torch.empty_like(x, dtype=torch.bool).bernoulli_(1 - p)
    return _GroupNormSiLUConv.apply(x, norm.weight, norm.bias, conv.weight, conv.bias, mask, norm.num_groups,
                                    norm.eps, conv.padding[0], p)
