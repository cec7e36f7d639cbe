"""NCSNv2 (Song & Ermon 2020): an unconditional RefineNet whose output is divided by sigma.

Technique 3 of the paper: instead of conditioning on the noise level, s(x, sigma) = f(x) / sigma.
Three depths, chosen by ``image_size`` as in ermongroup/ncsnv2 and score_sde: ``"64"`` (< 96 px;
4 residual stages, the last two dilated), ``"128"`` (96-128 px; 5 stages) and ``"256"``
(129-256 px; 6 stages). Parameter names are the original ones (``begin_conv``, ``res1`` ...,
``refine1`` ..., ``normalizer``, ``end_conv``).

Call: ``net(x, labels)``, ``x`` ``(B, C, H, W)`` in [0, 1] (``centered=False``) and labels ``(B,)``:
an integer tensor indexes the *descending* sigma ladder (0 = sigma_max), a float tensor is sigma
itself (the network is unconditional, so any sigma works). Returns ``(B, C, H, W)`` in x's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .layers import make_activation
from .refinenet import InstanceNorm2dPlus, RefineBlock, ResidualBlock

#: variant -> residual stages (name, in_mult, out_mult, down, dilation) and refine blocks
#: (name, [input mults], out_mult), refine blocks listed from the deepest stage up
_VARIANTS: dict[str, tuple[list, list]] = {
    "64": ([("res1", 1, 1, False, 1), ("res2", 1, 2, True, 1), ("res3", 2, 2, True, 2), ("res4", 2, 2, True, 4)],
           [("refine1", [2], 2), ("refine2", [2, 2], 2), ("refine3", [2, 2], 1), ("refine4", [1, 1], 1)]),
    "128": ([("res1", 1, 1, False, 1), ("res2", 1, 2, True, 1), ("res3", 2, 2, True, 1), ("res4", 2, 4, True, 2),
             ("res5", 4, 4, True, 4)],
            [("refine1", [4], 4), ("refine2", [4, 4], 2), ("refine3", [2, 2], 2), ("refine4", [2, 2], 1),
             ("refine5", [1, 1], 1)]),
    "256": ([("res1", 1, 1, False, 1), ("res2", 1, 2, True, 1), ("res3", 2, 2, True, 1), ("res31", 2, 2, True, 1),
             ("res4", 2, 4, True, 2), ("res5", 4, 4, True, 4)],
            [("refine1", [4], 4), ("refine2", [4, 4], 2), ("refine31", [2, 2], 2), ("refine3", [2, 2], 2),
             ("refine4", [2, 2], 1), ("refine5", [1, 1], 1)]),
}

NCSNV2_DEFAULTS: dict[str, Any] = {
    "image_size": 32,      # H = W; picks the variant unless ``variant`` is given
    "num_channels": 3,     # image channels C
    "centered": False,     # False: inputs in [0, 1], mapped to [-1, 1] inside
    "nf": 128,             # base width (ngf)
    "nonlinearity": "elu",
    "sigma_min": 0.01,     # geometric ladder of num_scales levels (NCSNv2 technique 2)
    "sigma_max": 50.0,
    "num_scales": 232,
    "variant": None,       # "64" | "128" | "256"; None: from image_size as the original
}


def variant_for(image_size: int) -> str:
    if image_size < 96:
        return "64"
    if image_size <= 128:
        return "128"
    if image_size <= 256:
        return "256"
    raise ValueError(f"image_size: NCSNv2 has no variant for {image_size} px (at most 256)")


def validate_ncsnv2(config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(NCSNV2_DEFAULTS))
    if unknown:
        raise ValueError(f"NCSNv2: unknown option(s) {unknown}; valid options: {sorted(NCSNV2_DEFAULTS)}")
    cfg = {**NCSNV2_DEFAULTS, **config}
    for key in ("image_size", "num_channels", "nf", "num_scales"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"{key}: expected a positive integer, got {cfg[key]!r}")
    cfg["variant"] = str(cfg["variant"]) if cfg["variant"] is not None else variant_for(cfg["image_size"])
    if cfg["variant"] not in _VARIANTS:
        raise ValueError(f"variant: unknown value {cfg['variant']!r}; use one of {list(_VARIANTS)}")
    n_down = sum(down and dil == 1 for _, _, _, down, dil in _VARIANTS[cfg["variant"]][0])
    if cfg["image_size"] % 2**n_down:
        raise ValueError(f"image_size: {cfg['image_size']} is not divisible by 2^{n_down} (variant {cfg['variant']})")
    if not 0 < float(cfg["sigma_min"]) < float(cfg["sigma_max"]):
        raise ValueError(f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max, got {cfg['sigma_min']}, "
                         f"{cfg['sigma_max']}")
    return cfg


class NCSNv2(nn.Module):
    """NCSNv2 RefineNet score network (see module docstring); options in ``NCSNV2_DEFAULTS``."""

    def __init__(self, **config):
        super().__init__()
        self.config = cfg = validate_ncsnv2(config)
        nf, ch = cfg["nf"], cfg["num_channels"]
        self.centered = cfg["centered"]
        self.act = act = make_activation(cfg["nonlinearity"])
        sigmas = torch.exp(torch.linspace(math.log(cfg["sigma_max"]), math.log(cfg["sigma_min"]), cfg["num_scales"],
                                          dtype=torch.float64))
        self.register_buffer("sigmas", sigmas, persistent=False)  # descending, as the original
        stages, refines = _VARIANTS[cfg["variant"]]
        self.begin_conv = nn.Conv2d(ch, nf, 3, padding=1)
        self.normalizer = InstanceNorm2dPlus(nf)
        self.end_conv = nn.Conv2d(nf, ch, 3, padding=1)
        for name, mi, mo, down, dil in stages:
            self.add_module(name, nn.ModuleList([
                ResidualBlock(mi * nf, mo * nf, act, down=down, dilation=dil),
                ResidualBlock(mo * nf, mo * nf, act, dilation=dil)]))
        for i, (name, ins, out) in enumerate(refines):
            self.add_module(name, RefineBlock([m * nf for m in ins], out * nf, act, start=i == 0,
                                              end=i == len(refines) - 1))
        self.stage_names = [s[0] for s in stages]
        self.refine_names = [r[0] for r in refines]

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = x if self.centered else 2 * x - 1.0
        h = self.begin_conv(h)
        layers = []
        for name in self.stage_names:
            for block in getattr(self, name):
                h = block(h)
            layers.append(h)
        ref = None
        for name, layer in zip(self.refine_names, reversed(layers)):
            xs = [layer] if ref is None else [layer, ref]
            ref = getattr(self, name)(xs, layer.shape[2:])
        out = self.end_conv(self.act(self.normalizer(ref)))
        sigma = labels if labels.is_floating_point() else self.sigmas[labels]
        return out / sigma.to(out.dtype).reshape(-1, *([1] * (out.ndim - 1)))
