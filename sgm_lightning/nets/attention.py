"""Spatial self-attention over all H*W positions (DDPM's ``AttnBlock``, score_sde ``AttnBlockpp``).

h = GroupNorm(x); q, k, v = 1x1 projections of h; out = x + W_o softmax(q k^T / sqrt(C)) v
(divided by sqrt(2) with ``skip_rescale``). The three projections are one fused matmul (their
weights stored as one 1x1 conv) and the attention is ``scaled_dot_product_attention`` (a fused,
memory-efficient kernel that keeps the softmax in float32 under bf16 autocast), instead of two
einsums and a materialised softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv, group_norm, skip_sum


class AttnBlock(nn.Module):
    """Single-head self-attention, ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, *, skip_rescale: bool, init_scale: float = 0.0):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = conv(channels, 3 * channels, 1)
        for w in self.qkv.weight.data.chunk(3):  # official: three NIN layers, each init_scale 0.1
            nn.init.uniform_(w, -1.0, 1.0).mul_((3 * 0.1 / channels) ** 0.5)
        self.proj = conv(channels, channels, 1, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        # the 1x1 projections as matmuls over (B, HW, C) rows (official NIN layout; a view when x is
        # channels_last), faster on CPU than 1x1 convolutions
        h = self.norm(x).permute(0, 2, 3, 1).reshape(b, 1, height * width, c)
        q, k, v = F.linear(h, self.qkv.weight.view(3 * c, c), self.qkv.bias).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C), as the official block
        h = F.linear(h, self.proj.weight.view(c, c), self.proj.bias)
        h = h.view(b, height, width, c).permute(0, 3, 1, 2)  # NCHW shape, channels_last strides
        if not x.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous()
        return skip_sum(x, h, self.skip_rescale)
