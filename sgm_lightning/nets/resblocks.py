"""Residual blocks of NCSN++ / DDPM++ (score_sde ``ResnetBlockDDPMpp`` / ``ResnetBlockBigGANpp``).

Both compute h = Conv1(Dropout(act(GN1(Conv0(act(GN0(x))) + Dense(act(temb)))))) and return
skip(x) + h, divided by sqrt(2) with ``skip_rescale``. The BigGAN block can also resample by 2
(FIR or nearest / mean) between the first activation and Conv0, on both paths.
``temb_act`` passed to ``forward`` is act(temb), computed once per network call.
"""

from __future__ import annotations

import torch
from torch import nn

from . import fir
from .layers import conv, conv1x1, dense, group_norm, skip_sum
from .norm_act import norm_act, norm_act_conv, recompute_enabled


class ResBlock(nn.Module):
    """``(B, in_ch, H, W), (B, temb_dim) -> (B, out_ch, H', W')`` with H' = 2H, H/2 or H.

    ``kind='ddpm'``: no resampling, NIN (1x1, init 0.1) shortcut when channels change.
    ``kind='biggan'``: optional ``up``/``down``; 1x1 conv shortcut when channels change or resampling.
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, *, kind: str, temb_dim: int,
                 dropout: float, skip_rescale: bool, init_scale: float, up: bool = False, down: bool = False,
                 fir_kernel: list[float] | None = None, recompute_norm_act: bool | str = "auto"):
        super().__init__()
        out_ch = out_ch or in_ch
        self.act, self.kind, self.up, self.down, self.skip_rescale = act, kind, up, down, skip_rescale
        self.recompute_norm_act = recompute_norm_act  # see norm_act.recompute_enabled
        if fir_kernel is not None and (up or down):
            self.register_buffer("kernel", fir.make_kernel(fir_kernel, gain=4.0 if up else 1.0), persistent=False)
        else:
            self.kernel = None
        self.norm0 = group_norm(in_ch)
        self.conv0 = conv(in_ch, out_ch)
        self.temb_proj = dense(temb_dim, out_ch)  # official blocks always own it, even unconditional
        self.norm1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv(out_ch, out_ch, init_scale=init_scale)
        self.skip = None
        if kind == "ddpm" and in_ch != out_ch:
            self.skip = conv(in_ch, out_ch, 1)
            nn.init.uniform_(self.skip.weight, -1.0, 1.0).data.mul_((3 * 0.1 / ((in_ch + out_ch) / 2)) ** 0.5)
        elif kind == "biggan" and (in_ch != out_ch or up or down):
            self.skip = conv(in_ch, out_ch, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return fir.upsample(x, self.kernel) if self.kernel is not None else fir.naive_upsample(x)
        if self.down:
            return fir.downsample(x, self.kernel) if self.kernel is not None else fir.naive_downsample(x)
        return x

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor | None = None) -> torch.Tensor:
        lean = recompute_enabled(self.recompute_norm_act, x)
        if self.up or self.down:
            h = self.conv0(self._resample(norm_act(self.norm0, self.act, x, lean)))
            x = self._resample(x)
        else:
            h = norm_act_conv(self.norm0, self.act, self.conv0, x, recompute=lean)
        if temb_act is not None:
            h = h.add_(self.temb_proj(temb_act)[:, :, None, None])  # the conv's backward does not need h
        h = norm_act_conv(self.norm1, self.act, self.conv1, h, self.dropout, recompute=lean)
        if self.skip is not None:
            x = conv1x1(x, self.skip.weight, self.skip.bias)
        return skip_sum(x, h, self.skip_rescale)
