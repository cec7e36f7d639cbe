"""A small noise-conditional MLP score network for point clouds (toy 2-D data, Gaussian mixtures).

Same calling convention as the image networks: ``net(x, labels)`` with ``x`` of shape
``(B, dim)`` and ``labels`` ``(B,)`` the noise conditioning of :func:`sgm_lightning.nets.noise_labels`
(sigma for continuous VE, 999 t for VP / sub-VP / OU, an integer level for discrete training).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_ACTS = {"silu": nn.SiLU, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of log(label) with fixed W ~ N(0, scale^2) (score_sde's fourier)."""

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        proj = torch.log(labels.clamp_min(1e-12))[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=1)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the label itself (DDPM / Transformer), max period 10000."""

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        proj = labels.float()[:, None] * self.freqs[None, :]
        return torch.cat([proj.sin(), proj.cos()], dim=1)


class ScoreMLP(nn.Module):
    """Residual MLP s(x, label) for ``dim``-dimensional points.

    Args:
        dim:            data dimension d; input and output are ``(B, d)``.
        hidden:         width of every hidden layer.
        depth:          number of residual blocks, each Linear-act-Linear plus the noise embedding.
        embedding:      ``fourier`` (of log label; for sigma labels) or ``positional`` (of the label).
        embed_dim:      size of the noise embedding (even).
        fourier_scale:  std of the fixed Fourier frequencies (score_sde uses 16).
        act:            ``silu | relu | elu | gelu``.
        scale_by_sigma: divide the output by the label (use with continuous VE: label = sigma,
                        so the net predicts sigma * score, which has unit scale).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        embedding: str = "fourier",
        embed_dim: int = 64,
        fourier_scale: float = 16.0,
        act: str = "silu",
        scale_by_sigma: bool = False,
    ):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden, depth: must all be >= 1, got {dim}, {hidden}, {depth}")
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim: must be an even number >= 2, got {embed_dim}")
        if act not in _ACTS:
            raise ValueError(f"act: unknown activation {act!r}; choose one of {sorted(_ACTS)}")
        if embedding == "fourier":
            self.embed = GaussianFourierEmbedding(embed_dim, fourier_scale)
        elif embedding == "positional":
            self.embed = PositionalEmbedding(embed_dim)
        else:
            raise ValueError(f"embedding: unknown {embedding!r}; choose fourier or positional")
        self.dim, self.scale_by_sigma = dim, scale_by_sigma
        self.act = _ACTS[act]()
        self.temb = nn.Sequential(nn.Linear(embed_dim, hidden), _ACTS[act](), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {"lin1": nn.Linear(hidden, hidden), "emb": nn.Linear(hidden, hidden), "lin2": nn.Linear(hidden, hidden)}
            )
            for _ in range(depth)
        )
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``x`` (B, dim), ``labels`` (B,) -> (B, dim)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x: expected shape (B, {self.dim}), got {tuple(x.shape)}")
        temb = self.temb(self.embed(labels.to(x.dtype)))
        h = self.inp(x)
        for blk in self.blocks:
            u = blk["lin1"](self.act(h)) + blk["emb"](self.act(temb))
            h = h + blk["lin2"](self.act(u))
        out = self.out(self.act(h))
        if self.scale_by_sigma:
            out = out / labels.to(out.dtype).reshape(-1, 1)
        return out
