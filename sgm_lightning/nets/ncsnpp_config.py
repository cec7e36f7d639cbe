"""Options of :class:`~sgm_lightning.nets.ncsnpp.NCSNpp`, their defaults and their checks.

Defaults are score_sde's CIFAR-10 NCSN++ (VE, continuous) config. Every impossible value fails
at construction with the option named (``ValueError``), before any weights are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: option -> default (score_sde ``configs/ve/cifar10_ncsnpp_continuous.py``)
NCSNPP_DEFAULTS: dict[str, Any] = {
    "image_size": 32,            # H = W of the input, divisible by 2^(len(ch_mult) - 1)
    "num_channels": 3,           # image channels C
    "centered": False,           # False: inputs in [0, 1], mapped to [-1, 1] inside
    "nf": 128,                   # base width; level i has nf * ch_mult[i] channels
    "ch_mult": (1, 2, 2, 2),     # one entry per resolution level
    "num_res_blocks": 4,         # ResBlocks per level in the encoder (decoder: one more)
    "attn_resolutions": (16,),   # resolutions (pixels) that get self-attention
    "dropout": 0.1,              # inside every ResBlock
    "resamp_with_conv": True,    # 3x3 conv in stand-alone up/down-sampling (resblock_type='ddpm')
    "conditional": True,         # noise-conditional (time embedding MLP)
    "embedding_type": "fourier",  # 'fourier' (of log sigma) | 'positional' (of the label)
    "fourier_scale": 16.0,       # std of the Fourier frequencies W
    "resblock_type": "biggan",   # 'biggan' (resampling inside blocks) | 'ddpm'
    "fir": True,                 # FIR-filtered resampling (else nearest / 2x2 mean)
    "fir_kernel": (1, 3, 3, 1),  # separable FIR taps
    "skip_rescale": True,        # residual sums divided by sqrt(2)
    "progressive": "none",       # output pyramid: 'none' | 'output_skip' | 'residual'
    "progressive_input": "residual",  # input pyramid: 'none' | 'input_skip' | 'residual'
    "progressive_combine": "sum",  # 'sum' | 'cat' (input_skip merge)
    "init_scale": 0.0,           # scale of the last conv of each block (0 -> 1e-10)
    "scale_by_sigma": True,      # divide the output by sigma (VE)
    "nonlinearity": "swish",     # 'swish' | 'elu' | 'relu' | 'lrelu'
    "sigma_min": 0.01,           # sigma ladder: used only for positional + scale_by_sigma
    "sigma_max": 50.0,
    "num_scales": 1000,
    "checkpoint_levels": False,  # activation checkpointing of each encoder/decoder level
    # speed/memory switches (same outputs); "auto": what docs/performance.md measured fastest per device
    "recompute_norm_act": "auto",  # backward recomputes GroupNorm+SiLU (True) or GroupNorm ('norm'): less memory
    "memory_format": "auto",     # 'auto' | 'contiguous' (NCHW) | 'channels_last' (NHWC) inside the net
}

_CHOICES = {
    "embedding_type": ("fourier", "positional"),
    "resblock_type": ("biggan", "ddpm"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "nonlinearity": ("swish", "silu", "elu", "relu", "lrelu"),
    "memory_format": ("auto", "contiguous", "channels_last"),
}


def _positive_int(cfg: dict, key: str) -> None:
    if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
        raise ValueError(f"{key}: expected a positive integer, got {cfg[key]!r}")


def validate_ncsnpp(config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, strings lower-cased, lists made tuples; raises ValueError naming the option."""
    unknown = sorted(set(config) - set(NCSNPP_DEFAULTS))
    if unknown:
        raise ValueError(f"NCSNpp: unknown option(s) {unknown}; valid options: {sorted(NCSNPP_DEFAULTS)}")
    cfg = {**NCSNPP_DEFAULTS, **config}
    for key, choices in _CHOICES.items():
        if not isinstance(cfg[key], str) or cfg[key].lower() not in choices:
            raise ValueError(f"{key}: unknown value {cfg[key]!r}; use one of {list(choices)}")
        cfg[key] = cfg[key].lower()
    if cfg["recompute_norm_act"] not in (True, False, "norm", "auto"):
        raise ValueError(f"recompute_norm_act: expected true, false, 'norm' or 'auto', "
                         f"got {cfg['recompute_norm_act']!r}")
    for key in ("image_size", "num_channels", "nf", "num_res_blocks", "num_scales"):
        _positive_int(cfg, key)
    cfg["ch_mult"] = tuple(cfg["ch_mult"])
    cfg["attn_resolutions"] = tuple(cfg["attn_resolutions"])
    cfg["fir_kernel"] = tuple(cfg["fir_kernel"])
    if not cfg["ch_mult"] or not all(isinstance(m, int) and m >= 1 for m in cfg["ch_mult"]):
        raise ValueError(f"ch_mult: expected a non-empty list of positive integers, got {cfg['ch_mult']!r}")
    levels = len(cfg["ch_mult"])
    if cfg["image_size"] % 2 ** (levels - 1):
        raise ValueError(f"image_size: {cfg['image_size']} is not divisible by 2^{levels - 1} "
                         f"(len(ch_mult) = {levels} levels); change image_size or ch_mult")
    resolutions = [cfg["image_size"] // 2**i for i in range(levels)]
    bad = [r for r in cfg["attn_resolutions"] if r not in resolutions]
    if bad:
        raise ValueError(f"attn_resolutions: {bad} never occur; the resolutions of this network are {resolutions}")
    widths = {cfg["nf"] * m for m in cfg["ch_mult"]} | {cfg["nf"]}
    if min(widths) < 4:
        raise ValueError(f"nf: {cfg['nf']} gives a level narrower than 4 channels (GroupNorm needs C // 4 groups)")
    if not 0.0 <= float(cfg["dropout"]) < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {cfg['dropout']!r}")
    if not 0 < float(cfg["sigma_min"]) < float(cfg["sigma_max"]):
        raise ValueError(f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max, got {cfg['sigma_min']}, "
                         f"{cfg['sigma_max']}")
    if cfg["fir"] and len(cfg["fir_kernel"]) < 2:
        raise ValueError(f"fir_kernel: need at least 2 taps to resample by 2, got {cfg['fir_kernel']!r}")
    return cfg
