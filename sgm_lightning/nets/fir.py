"""FIR up/down-sampling in pure PyTorch (StyleGAN2's ``upfirdn2d``, as used by NCSN++).

score_sde resamples with a separable FIR filter k (default ``[1, 3, 3, 1]``) through StyleGAN2's
``upfirdn2d``: zero-insert by ``up``, pad, convolve with k, keep every ``down``-th pixel. Its CPU
fallback reshapes to ``(B*C, 1, H, W)`` and runs a single-channel convolution; here the same
operator is one *depthwise* convolution (``groups=C``): ``conv2d`` with stride ``down`` for
down-sampling and ``conv_transpose2d`` with stride ``up`` for up-sampling. Both run on any device,
in ``channels_last``, under autocast and ``torch.compile``, with no compiled extension.

Shapes: ``x`` is ``(B, C, H, W)``; ``kernel`` is the 2-D filter ``(K, K)`` from :func:`make_kernel`.
Padding follows score_sde's ``upsample_2d`` / ``downsample_2d`` / ``upsample_conv_2d`` /
``conv_downsample_2d`` exactly, so outputs agree with the official code to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def make_kernel(k: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """2-D FIR filter from a 1-D (separable) or 2-D list, normalised to sum ``gain`` (float32)."""
    t = torch.as_tensor(k, dtype=torch.float64, device="cpu")
    if t.ndim == 1:
        t = torch.outer(t, t)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
        raise ValueError(f"fir_kernel: expected a 1-D list or a square 2-D list, got shape {tuple(t.shape)}")
    if float(t.sum()) == 0.0:
        raise ValueError("fir_kernel: the filter taps sum to zero; give a low-pass filter such as [1, 3, 3, 1]")
    return (t / t.sum() * gain).to(torch.float32)


def _depthwise(kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(C, 1, K, K)`` weight applying ``kernel`` to each of the C channels of ``x``."""
    return kernel.to(dtype=x.dtype).expand(x.shape[1], 1, *kernel.shape)


def _pad(x: torch.Tensor, p0: int, p1: int) -> torch.Tensor:
    return F.pad(x, (p0, p1, p0, p1)) if (p0 or p1) else x


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """``upfirdn2d(x, k, up=1, down=1, pad)``: pad then convolve (true convolution, flipped k)."""
    w = _depthwise(kernel.flip(0, 1), x)
    if pad[0] == pad[1]:
        return F.conv2d(x, w, padding=pad[0], groups=x.shape[1])
    return F.conv2d(_pad(x, *pad), w, groups=x.shape[1])


def downsample(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """FIR down-sampling, ``(B, C, H, W) -> (B, C, H/f, W/f)`` (score_sde ``downsample_2d``)."""
    p = kernel.shape[0] - factor
    w = _depthwise(kernel.flip(0, 1), x)
    if (p + 1) // 2 == p // 2:
        return F.conv2d(x, w, stride=factor, padding=p // 2, groups=x.shape[1])
    return F.conv2d(_pad(x, (p + 1) // 2, p // 2), w, stride=factor, groups=x.shape[1])


def upsample(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """FIR up-sampling, ``(B, C, H, W) -> (B, C, fH, fW)`` (score_sde ``upsample_2d``).

    ``kernel`` must already carry the gain ``factor**2`` (see :func:`make_kernel`). Zero insertion
    followed by a convolution is a strided transposed convolution: with upfirdn padding
    ``pad0 = (p+1)//2 + f - 1`` the transposed conv needs ``padding = K - 1 - pad0``.
    """
    k = kernel.shape[0]
    p = k - factor
    pad0, pad1 = (p + 1) // 2 + factor - 1, p // 2
    padding = k - 1 - pad0
    out_pad = factor - 1 + pad1 - pad0
    if padding < 0 or not 0 <= out_pad < factor:
        raise ValueError(f"fir_kernel: a {k}-tap filter cannot up-sample by {factor}; use at least {factor} taps")
    return F.conv_transpose2d(
        x, _depthwise(kernel, x), stride=factor, padding=padding, output_padding=out_pad, groups=x.shape[1]
    )


def conv_downsample(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Blur with the FIR filter, then a strided 3x3 conv (score_sde ``conv_downsample_2d``).

    ``weight``: ``(C_out, C_in, kh, kw)``. Output ``(B, C_out, H/f, W/f)``.
    """
    p = (kernel.shape[0] - factor) + (weight.shape[-1] - 1)
    x = fir_filter(x, kernel, ((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Strided transposed 3x3 conv, then blur (score_sde ``upsample_conv_2d``).

    ``weight``: ``(C_out, C_in, kh, kw)`` in the layout of a plain conv; ``kernel`` carries the
    gain ``factor**2``. Output ``(B, C_out, fH, fW)``.
    """
    kw = weight.shape[-1]
    # a conv_transpose with the spatially flipped, in/out-transposed weight (as the official op)
    w = weight.flip(-2, -1).transpose(0, 1)
    x = F.conv_transpose2d(x, w, stride=factor)
    p = (kernel.shape[0] - factor) - (kw - 1)
    return fir_filter(x, kernel, ((p + 1) // 2 + factor - 1, p // 2 + 1))


def naive_upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour up-sampling (score_sde ``naive_upsample_2d``).

    On NCHW tensors the official broadcast + reshape (one copy) is several times faster on CPU than
    ``F.interpolate``; on channels_last tensors ``F.interpolate`` keeps the layout and is faster.
    """
    if x.ndim == 4 and x.is_contiguous():
        b, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(b, c, h, factor, w, factor).reshape(b, c, h * factor, w * factor)
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Mean over ``factor x factor`` blocks (score_sde ``naive_downsample_2d``)."""
    return F.avg_pool2d(x, factor)
