"""RefineNet blocks of NCSNv2 (Song & Ermon 2020; ermongroup/ncsnv2 ``models/layers.py``).

Module and parameter names are the original ones (``conv1``, ``normalize2``, ``1_1_conv``,
``adapt_convs``, ``msf``, ``crp`` ...), so NCSNv2 checkpoints from ermongroup/ncsnv2 and
score_sde load by name. Convs use PyTorch's default init, as the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ (Song & Ermon 2019, Eq. in App. A): instance norm that keeps the channel means.

    z = gamma * (IN(x) + alpha * (mu - mean_c mu) / sqrt(var_c mu + eps)) + beta, where mu are the
    per-channel spatial means (unbiased variance over channels, as the original). ``(B, C, H, W)``.
    """

    def __init__(self, num_features: int, bias: bool = True):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in float32 at least (autocast-safe); IN normalises with the biased variance
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        means = xf.mean(dim=(2, 3))
        m, v = means.mean(dim=-1, keepdim=True), means.var(dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        h = F.instance_norm(xf, eps=1e-5)
        h = h + means[..., None, None] * self.alpha[:, None, None]
        out = self.gamma[:, None, None] * h
        if self.beta is not None:
            out = out + self.beta[:, None, None]
        return out.to(x.dtype)


def conv3x3(in_ch: int, out_ch: int, *, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    """3x3 conv keeping the spatial size (padding = dilation, as ncsnv2's ``dilated_conv3x3``)."""
    return nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Conv (``kernel`` x ``kernel``, same padding), then 2x2 mean pooling: ``(B, C, H, W) -> (B, C', H/2, W/2)``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 2)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv2(act(norm2(conv1(act(norm1(x)))))).

    ``down=True`` halves the resolution with ConvMeanPool when ``dilation == 1``; with dilation
    > 1 the original keeps the resolution (dilated convs instead of pooling) and so do we.
    """

    def __init__(self, in_ch: int, out_ch: int, act: nn.Module, *, down: bool = False, dilation: int = 1):
        super().__init__()
        self.act = act
        self.normalize1 = InstanceNorm2dPlus(in_ch)
        mid = in_ch if down else out_ch
        self.conv1 = conv3x3(in_ch, mid, dilation=dilation)
        self.normalize2 = InstanceNorm2dPlus(mid)
        if down and dilation == 1:
            self.conv2, shortcut = ConvMeanPool(mid, out_ch), ConvMeanPool(in_ch, out_ch, kernel=1)
        else:
            self.conv2 = conv3x3(mid, out_ch, dilation=dilation)
            shortcut = (conv3x3(in_ch, out_ch, dilation=dilation) if dilation > 1
                        else nn.Conv2d(in_ch, out_ch, 1))
        self.shortcut = shortcut if (down or in_ch != out_ch) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.normalize1(x)))
        h = self.conv2(self.act(self.normalize2(h)))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class RCUBlock(nn.Module):
    """Residual conv unit: ``n_blocks`` x (``n_stages`` x (act, 3x3 conv) + identity)."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, act: nn.Module):
        super().__init__()
        for i in range(n_blocks):
            for j in range(n_stages):
                self.add_module(f"{i + 1}_{j + 1}_conv", conv3x3(features, features, bias=False))
        self.n_blocks, self.n_stages, self.act = n_blocks, n_stages, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_blocks):
            residual = x
            for j in range(self.n_stages):
                x = getattr(self, f"{i + 1}_{j + 1}_conv")(self.act(x))
            x = x + residual
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: x <- x + conv(maxpool5x5(path)) repeated ``n_stages`` times."""

    def __init__(self, features: int, n_stages: int, act: nn.Module):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_stages))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = path = self.act(x)
        for conv in self.convs:
            path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: sum of 3x3 convs of each input, bilinearly resized (align_corners)."""

    def __init__(self, in_planes: Sequence[int], features: int):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(c, features) for c in in_planes)

    def forward(self, xs: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
        out = 0
        for conv, x in zip(self.convs, xs):
            h = conv(x)
            if tuple(h.shape[-2:]) != tuple(shape):
                h = F.interpolate(h, size=tuple(shape), mode="bilinear", align_corners=True)
            out = out + h
        return out


class RefineBlock(nn.Module):
    """RefineNet block: RCU on each input, fuse (MSF), CRP, output RCU (3 blocks at the end)."""

    def __init__(self, in_planes: Sequence[int], features: int, act: nn.Module, *, start: bool = False,
                 end: bool = False):
        super().__init__()
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, act)
        self.msf = None if start else MSFBlock(in_planes, features)
        self.crp = CRPBlock(features, 2, act)

    def forward(self, xs: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
        hs = [adapt(x) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, shape) if self.msf is not None else hs[0]
        return self.output_convs(self.crp(h))
