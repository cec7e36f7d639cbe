"""Preconditioning of a score network (Karras et al. 2022, "EDM", Table 1).

The network F is wrapped into a denoiser of the noise level sigma (x = x_0 + sigma n):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

so that F sees inputs of unit variance and learns a target of unit variance at every sigma.
The score of the sigma-space density is (D - x) / sigma^2 (Tweedie); the processes of
:mod:`sgm_lightning.sde` with a scale s(t) (VP, sub-VP, OU) map x_t = s(t) (x_0 + sigma(t) n)
into that space, which :func:`sgm_lightning.nets.score_fn_from_net` does.

Coefficients, with sigma_data the standard deviation of the data:

=========  ==========================  ==========================  ==================  =================
 kind       c_skip                      c_out                       c_in                c_noise
=========  ==========================  ==========================  ==================  =================
 ``edm``    sd^2 / (sigma^2 + sd^2)     sigma sd / sqrt(s^2+sd^2)   1/sqrt(s^2+sd^2)    ln(sigma) / 4
 ``vp``     1                           -sigma                      1/sqrt(sigma^2+1)   (M-1) t_vp(sigma)
 ``ve``     1                           sigma                       1                   ln(sigma / 2)
=========  ==========================  ==========================  ==================  =================

t_vp(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d is the time of
EDM's VP schedule (beta_d = 19.9, beta_min = 0.1, M = 1000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("none", "edm", "vp", "ve")


@dataclass(frozen=True)
class Precond:
    """EDM-style preconditioning of kind ``edm | vp | ve`` (see module docstring)."""

    kind: str = "edm"
    sigma_data: float = 0.5
    beta_d: float = 19.9        # vp: EDM's VP schedule, for c_noise
    beta_min: float = 0.1
    M: int = 1000

    def __post_init__(self):
        if self.kind not in KINDS[1:]:
            raise ValueError(f"precond: choose one of {list(KINDS[1:])}, got {self.kind!r}")
        if not (isinstance(self.sigma_data, (int, float)) and 0 < self.sigma_data < math.inf):
            raise ValueError(f"sigma_data: must be a positive number, got {self.sigma_data!r}")

    def coeffs(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` at noise levels ``sigma`` (any shape)."""
        one = torch.ones_like(sigma)
        if self.kind == "edm":
            sd2, r = self.sigma_data**2, torch.rsqrt(sigma**2 + self.sigma_data**2)
            return sd2 * r**2, sigma * self.sigma_data * r, r, sigma.log() / 4
        if self.kind == "vp":
            t = ((self.beta_min**2 + 2 * self.beta_d * torch.log1p(sigma**2)).sqrt() - self.beta_min) / self.beta_d
            return one, -sigma, torch.rsqrt(sigma**2 + 1), (self.M - 1) * t
        return one, sigma, one, (0.5 * sigma).log()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM's lambda(sigma) = 1 / c_out^2 (for ``edm``: (sigma^2 + sd^2) / (sigma sd)^2)."""
        return self.coeffs(sigma)[1] ** -2

    def denoise(self, net: nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma) for ``x`` ``(B, ...)`` in sigma-space and ``sigma`` ``(B,)``."""
        c_skip, c_out, c_in, c_noise = (c.reshape(c.shape + (1,) * (x.ndim - 1)) for c in self.coeffs(sigma))
        out = net(c_in * x, network_labels(net, c_noise.flatten()))
        return c_skip * x + c_out * out


def network_labels(net: nn.Module, c_noise: torch.Tensor) -> torch.Tensor:
    """The label that makes ``net`` condition on ``c_noise``.

    Networks with a Fourier embedding of log(label) (NCSN++'s VE setting, the toy MLP's
    ``fourier``) get exp(c_noise), so they embed c_noise itself; NCSNv2 is unconditional up to
    a division of its output by the label, so it gets 1 (no division: c_out scales it).
    """
    from .mlp import GaussianFourierEmbedding
    from .ncsnv2 import NCSNv2

    if isinstance(net, NCSNv2):
        return torch.ones_like(c_noise)
    if getattr(net, "embedding_type", None) == "fourier" or isinstance(getattr(net, "embed", None),
                                                                      GaussianFourierEmbedding):
        return c_noise.exp()
    return c_noise


def precond_from_config(model_cfg) -> Precond | None:
    """The :class:`Precond` of a ``model`` config section (None for ``precond: none``)."""
    kind = model_cfg.get("precond", "none")
    if kind == "none":
        return None
    sd = model_cfg.get("sigma_data", 0.5)
    if sd == "auto":
        raise ValueError("model.sigma_data: still 'auto'; it is estimated from the training data when training starts")
    return Precond(kind=kind, sigma_data=float(sd))
