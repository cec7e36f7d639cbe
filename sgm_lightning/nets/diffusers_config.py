"""diffusers ``UNet2DModel`` config <-> our ``NCSNpp`` options, for the NCSN++ family only.

:func:`ncsnpp_kwargs_from_diffusers` reads a ``config.json`` (keys it leaves out take
UNet2DModel's defaults) and :func:`unet_config` writes one; both refuse, in one line naming the
key, what the other side cannot compute (see :mod:`.diffusers_io` for the table and the list).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .ncsnpp import NCSNpp

DOWN_TYPES, UP_TYPES = ("SkipDownBlock2D", "AttnSkipDownBlock2D"), ("SkipUpBlock2D", "AttnSkipUpBlock2D")
MIN_ATTN_WIDTH = 128  # the Skip blocks' attention GroupNorm has 32 groups; ours min(C // 4, 32)
SQRT2 = math.sqrt(2.0)


def _check(ok: bool, key: str, value: Any, supported: str) -> None:
    if not ok:
        raise ValueError(f"diffusers config: {key}={value!r} is not supported; supported: {supported}")


def _groups(channels: int) -> int:
    return min(channels // 4, 32)  # our GroupNorm (score_sde)


def ncsnpp_kwargs_from_diffusers(config: Mapping[str, Any]) -> dict[str, Any]:
    """``NCSNpp`` options for a diffusers ``UNet2DModel`` config (absent keys: UNet2DModel's defaults).

    Raises ``ValueError`` naming the first config key outside the NCSN++ family (module docstring)."""
    c = {**_UNET_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}}
    _check(c["_class_name"] == "UNet2DModel", "_class_name", c["_class_name"], "'UNet2DModel'")
    _check(c["time_embedding_type"] == "fourier", "time_embedding_type", c["time_embedding_type"],
           "'fourier' (NCSN++, a VE score model; DDPM-style positional models have no NCSNpp counterpart)")
    for key in ("in_channels", "out_channels"):
        _check(c[key] == 3, key, c[key], "3 (diffusers' Skip blocks hard-code RGB)")
    down, up, widths = list(c["down_block_types"]), list(c["up_block_types"]), list(c["block_out_channels"])
    _check(all(t in DOWN_TYPES for t in down), "down_block_types", down, f"a list of {list(DOWN_TYPES)}")
    _check(all(t in UP_TYPES for t in up), "up_block_types", up, f"a list of {list(UP_TYPES)}")
    _check(len(widths) == len(down) == len(up), "block_out_channels", widths, "one width per down and per up block")
    nf = widths[0]
    _check(all(isinstance(w, int) and w % nf == 0 for w in widths), "block_out_channels", widths,
           "multiples of the first width (our nf * ch_mult)")
    attn = [t == "AttnSkipDownBlock2D" for t in down]
    _check(attn == [t == "AttnSkipUpBlock2D" for t in reversed(up)], "up_block_types", up,
           "attention at the same resolutions as down_block_types (the mirror image)")
    narrow = [w for w, a in zip(widths, attn) if a and w < MIN_ATTN_WIDTH]
    _check(not narrow, "down_block_types", down, f"Attn* blocks at widths >= {MIN_ATTN_WIDTH} only (width "
           f"{narrow[:1]}: their attention GroupNorm has 32 groups, ours min(C // 4, 32))")
    _check(c["mid_block_type"] == "UNetMidBlock2D", "mid_block_type", c["mid_block_type"], "'UNetMidBlock2D'")
    _check(c["add_attention"] is True, "add_attention", c["add_attention"], "true")
    _check(abs(float(c["mid_block_scale_factor"]) - SQRT2) < 1e-6, "mid_block_scale_factor",
           c["mid_block_scale_factor"], "sqrt(2) (skip_rescale)")
    _check(c["act_fn"] in ("silu", "swish"), "act_fn", c["act_fn"], "'silu' / 'swish'")
    _check(abs(float(c["norm_eps"]) - 1e-6) < 1e-12, "norm_eps", c["norm_eps"], "1e-06")
    _check(c["norm_num_groups"] in (None, _groups(nf)) and c["norm_num_groups"] in (None, _groups(widths[-1])),
           "norm_num_groups", c["norm_num_groups"], "null (min(C // 4, 32) per layer, as NCSN++)")
    _check(c["attn_norm_num_groups"] in (None, _groups(widths[-1])), "attn_norm_num_groups", c["attn_norm_num_groups"],
           "null")
    heads = [w for w, a in zip(widths, attn) if a] + [widths[-1]]
    _check(c["attention_head_dim"] is None or all(w == c["attention_head_dim"] for w in heads), "attention_head_dim",
           c["attention_head_dim"], "null (single-head attention, as NCSN++)")
    for key, want in (("resnet_time_scale_shift", "default"), ("class_embed_type", None), ("num_class_embeds", None)):
        _check(c[key] == want, key, c[key], repr(want))
    _check(c["time_embedding_dim"] in (None, 4 * nf), "time_embedding_dim", c["time_embedding_dim"],
           f"null or {4 * nf}")
    size = c["sample_size"]
    if isinstance(size, (list, tuple)):
        _check(len(size) == 2 and size[0] == size[1], "sample_size", size, "square images")
        size = size[0]
    _check(isinstance(size, int) and size > 0, "sample_size", size, "a positive integer")
    return dict(image_size=size, num_channels=3, centered=not c["center_input_sample"], nf=nf,
                ch_mult=tuple(w // nf for w in widths), num_res_blocks=int(c["layers_per_block"]),
                attn_resolutions=tuple(size // 2**i for i, a in enumerate(attn) if a), dropout=float(c["dropout"]),
                conditional=True, embedding_type="fourier", fourier_scale=16.0, resblock_type="biggan", fir=True,
                fir_kernel=(1, 3, 3, 1), skip_rescale=True, progressive="output_skip", progressive_input="input_skip",
                progressive_combine="sum", scale_by_sigma=True, nonlinearity="swish")


#: UNet2DModel's keyword defaults (diffusers 0.42) for keys a config.json may leave out
_UNET_DEFAULTS: dict[str, Any] = {
    "_class_name": "UNet2DModel", "sample_size": None, "in_channels": 3, "out_channels": 3,
    "center_input_sample": False, "time_embedding_type": "positional", "time_embedding_dim": None,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2, "mid_block_scale_factor": 1,
    "dropout": 0.0, "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None,
    "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None,
}


def _refuse(key: str, value: Any, supported: Any, why: str = "") -> None:
    why = f" ({why})" if why else ""
    raise ValueError(f"to_diffusers: {key}={value!r} cannot be represented by diffusers' UNet2DModel{why}; "
                     f"supported: {supported!r}")


def unet_config(net: NCSNpp, version: str) -> dict[str, Any]:
    """The ``UNet2DModel`` config.json of ``net``; ``ValueError`` naming the first option diffusers cannot hold."""
    cfg = net.config
    for key, want in (("embedding_type", "fourier"), ("conditional", True), ("scale_by_sigma", True),
                      ("resblock_type", "biggan"), ("fir", True), ("skip_rescale", True),
                      ("progressive", "output_skip"), ("progressive_input", "input_skip"),
                      ("progressive_combine", "sum")):
        if cfg[key] != want:
            _refuse(key, cfg[key], want, "diffusers' NCSN++ is the Skip-block family only")
    if tuple(cfg["fir_kernel"]) != (1, 3, 3, 1):
        _refuse("fir_kernel", cfg["fir_kernel"], [1, 3, 3, 1], "hard-coded in diffusers")
    if cfg["nonlinearity"] not in ("swish", "silu"):
        _refuse("nonlinearity", cfg["nonlinearity"], "swish")
    if cfg["num_channels"] != 3:
        _refuse("num_channels", cfg["num_channels"], 3, "the Skip blocks hard-code RGB")
    if cfg["ch_mult"][0] != 1:
        _refuse("ch_mult", list(cfg["ch_mult"]), "ch_mult[0] = 1", "the time embedding is 4 x the first width")
    size, nf = cfg["image_size"], cfg["nf"]
    attn = [size // 2**i in cfg["attn_resolutions"] for i in range(len(cfg["ch_mult"]))]
    narrow = [nf * m for m, a in zip(cfg["ch_mult"], attn) if a and nf * m < MIN_ATTN_WIDTH]
    if narrow:
        _refuse("attn_resolutions", list(cfg["attn_resolutions"]), f"attention at widths >= {MIN_ATTN_WIDTH}",
                f"width {narrow[0]}: the Skip blocks' attention has 32 GroupNorm groups, ours {_groups(narrow[0])}")
    return {"_class_name": "UNet2DModel", "_diffusers_version": version, "sample_size": size, "in_channels": 3,
            "out_channels": 3, "center_input_sample": not cfg["centered"], "time_embedding_type": "fourier",
            "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
            "down_block_types": [DOWN_TYPES[a] for a in attn], "mid_block_type": "UNetMidBlock2D",
            "up_block_types": [UP_TYPES[a] for a in reversed(attn)],
            "block_out_channels": [nf * m for m in cfg["ch_mult"]],
            "layers_per_block": cfg["num_res_blocks"], "mid_block_scale_factor": SQRT2, "downsample_padding": 1,
            "downsample_type": "conv", "upsample_type": "conv", "dropout": float(cfg["dropout"]), "act_fn": "silu",
            "attention_head_dim": None, "norm_num_groups": None, "attn_norm_num_groups": None, "norm_eps": 1e-6,
            "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
            "num_class_embeds": None, "num_train_timesteps": None}
