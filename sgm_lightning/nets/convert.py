"""Load official score_sde_pytorch checkpoints into our networks: ``from_score_sde(state_dict, config)``.

score_sde's NCSN++ keeps its layers in one flat ``all_modules`` list (``all_modules.<i>.<name>``);
:meth:`NCSNpp.official_modules` lists our modules in that construction order and
:func:`_param_table` says, per module type, which official tensors make each of our parameters
(the attention's three ``NIN`` layers, stored ``(in, out)``, become one fused 1x1 conv). NCSNv2
keeps the original names, so its table is the identity. Loading is strict: every missing,
unexpected or mis-shaped key is listed in one ``ValueError``; nothing is silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .attention import AttnBlock
from .layers import Combine, GaussianFourierProjection, Resample
from .ncsnpp import NCSNpp
from .ncsnv2 import NCSNv2
from .resblocks import ResBlock

Rule = tuple[str, list[str], Callable[..., torch.Tensor]]  # (our name, official names, combine)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _nin_to_conv(*ws: torch.Tensor) -> torch.Tensor:
    """NIN weights ``(in, out)`` (used as x @ W) -> one 1x1 conv weight ``(sum out, in, 1, 1)``."""
    return torch.cat([w.t() for w in ws], dim=0)[:, :, None, None]


def _cat(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat(ts, dim=0)


def _param_table(module: nn.Module) -> list[Rule]:
    """Our local parameter/buffer names -> the official local names they are built from."""
    if isinstance(module, GaussianFourierProjection):
        return [("W", ["W"], _same)]
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.GroupNorm)):
        return [("weight", ["weight"], _same), ("bias", ["bias"], _same)]
    if isinstance(module, Combine):
        return [("proj.weight", ["Conv.weight"], _same), ("proj.bias", ["Conv.bias"], _same)]
    if isinstance(module, Resample):
        if not module.with_conv:
            return []
        name = "Conv2d_0" if module.fir else "Conv_0"
        return [("conv.weight", [f"{name}.weight"], _same), ("conv.bias", [f"{name}.bias"], _same)]
    if isinstance(module, AttnBlock):
        return [("norm.weight", ["GroupNorm_0.weight"], _same), ("norm.bias", ["GroupNorm_0.bias"], _same),
                ("qkv.weight", ["NIN_0.W", "NIN_1.W", "NIN_2.W"], _nin_to_conv),
                ("qkv.bias", ["NIN_0.b", "NIN_1.b", "NIN_2.b"], _cat),
                ("proj.weight", ["NIN_3.W"], _nin_to_conv), ("proj.bias", ["NIN_3.b"], _same)]
    if isinstance(module, ResBlock):
        rules = []
        for ours, theirs in (("norm0", "GroupNorm_0"), ("conv0", "Conv_0"), ("temb_proj", "Dense_0"),
                             ("norm1", "GroupNorm_1"), ("conv1", "Conv_1")):
            rules += [(f"{ours}.weight", [f"{theirs}.weight"], _same), (f"{ours}.bias", [f"{theirs}.bias"], _same)]
        if module.skip is not None and module.kind == "ddpm":  # official NIN shortcut
            rules += [("skip.weight", ["NIN_0.W"], _nin_to_conv), ("skip.bias", ["NIN_0.b"], _same)]
        elif module.skip is not None:
            rules += [("skip.weight", ["Conv_2.weight"], _same), ("skip.bias", ["Conv_2.bias"], _same)]
        return rules
    raise TypeError(f"no official-name rule for {type(module).__name__}")


def _ncsnpp_table(model: NCSNpp) -> list[Rule]:
    names = {m: n for n, m in model.named_modules()}
    table: list[Rule] = []
    for i, module in enumerate(model.official_modules()):
        for ours, theirs, fn in _param_table(module):
            table.append((f"{names[module]}.{ours}", [f"all_modules.{i}.{t}" for t in theirs], fn))
    return table


def _identity_table(model: nn.Module) -> list[Rule]:
    return [(k, [k], _same) for k in model.state_dict()]


def load_official_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Strictly load an official state dict (``module.`` prefix optional) into ``model``.

    Raises ``ValueError`` listing every missing, unexpected and mis-shaped key, and a sigma table
    that does not match the config. Returns ``model``.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    table = _ncsnpp_table(model) if isinstance(model, NCSNpp) else _identity_table(model)
    ours = model.state_dict()
    expected = {t for _, theirs, _ in table for t in theirs} | {"sigmas"}
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    mismatched, converted = [], {}
    for name, theirs, fn in table:
        if any(t not in sd for t in theirs):
            continue
        try:
            value = fn(*(sd[t] for t in theirs))
        except RuntimeError:
            value = None
        if value is None or value.shape != ours[name].shape:
            shapes = ", ".join(f"{t} {tuple(sd[t].shape)}" for t in theirs)
            mismatched.append(f"{shapes} -> {name} expects {tuple(ours[name].shape)}")
            continue
        converted[name] = value
    if "sigmas" in sd and not _same_ladder(sd["sigmas"], model.sigmas):
        mismatched.append(f"sigmas {tuple(sd['sigmas'].shape)}: the checkpoint's sigma ladder differs from "
                          f"sigma_min/sigma_max/num_scales of the config")
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(keys)}): {', '.join(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]
        raise ValueError("state_dict does not match the config; " + "; ".join(parts))
    model.load_state_dict(converted, strict=True)
    return model


def _same_ladder(theirs: torch.Tensor, ours: torch.Tensor) -> bool:
    return theirs.shape == ours.shape and torch.allclose(theirs.double().cpu(), ours.double().cpu(), rtol=1e-5)


# --- configs --------------------------------------------------------------------------------

def _get(section: Mapping[str, Any], key: str, where: str, default: Any = ...) -> Any:
    if key in section:
        return section[key]
    if default is ...:
        raise ValueError(f"config: {where}.{key} is missing")
    return default


def _expect(section: Mapping[str, Any], key: str, where: str, allowed: tuple) -> None:
    if key in section and section[key] not in allowed:
        raise ValueError(f"config: {where}.{key}={section[key]!r} is not supported; supported: {list(allowed)}")


def _ncsnpp_kwargs(model: Mapping[str, Any], data: Mapping[str, Any], training: Mapping[str, Any]) -> dict:
    _expect(model, "normalization", "model", ("GroupNorm",))
    _expect(model, "attention_type", "model", ("ddpm",))
    _expect(model, "conv_size", "model", (3,))
    kw = {k: _get(model, k, "model") for k in (
        "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv", "conditional",
        "embedding_type", "resblock_type", "fir", "fir_kernel", "skip_rescale", "progressive",
        "progressive_input", "progressive_combine", "init_scale", "scale_by_sigma")}
    kw.update(fourier_scale=float(_get(model, "fourier_scale", "model", 16.0)),
              nonlinearity=_get(model, "nonlinearity", "model", "swish"),
              sigma_min=float(_get(model, "sigma_min", "model")), sigma_max=float(_get(model, "sigma_max", "model")),
              num_scales=int(_get(model, "num_scales", "model")),
              image_size=int(_get(data, "image_size", "data")), num_channels=int(_get(data, "num_channels", "data")),
              centered=bool(_get(data, "centered", "data")))
    if str(kw["embedding_type"]).lower() == "fourier" and training.get("continuous", True) is False:
        raise ValueError("config: model.embedding_type='fourier' needs training.continuous=True (as score_sde)")
    return kw


def _ncsnv2_kwargs(name: str, model: Mapping[str, Any], data: Mapping[str, Any]) -> dict:
    _expect(model, "normalization", "model", ("InstanceNorm++",))
    channels = data.get("channels", data.get("num_channels"))
    if channels is None:
        raise ValueError("config: data.num_channels (or data.channels) is missing")
    return dict(nf=int(_get(model, "nf", "model")), nonlinearity=_get(model, "nonlinearity", "model", "elu"),
                sigma_min=float(_get(model, "sigma_min", "model")), sigma_max=float(_get(model, "sigma_max", "model")),
                num_scales=int(_get(model, "num_scales", "model")), image_size=int(_get(data, "image_size", "data")),
                num_channels=int(channels), centered=bool(_get(data, "centered", "data")),
                variant=name.removeprefix("ncsnv2_"))


def network_kwargs_from_score_sde(config: Mapping[str, Any]) -> tuple[str, dict]:
    """``(arch, kwargs)`` for :func:`~sgm_lightning.nets.build_network` from a score_sde config
    (nested ``{"model": ..., "data": ..., "training": ...}`` dict or an ml_collections ConfigDict)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping) or "model" not in config or "data" not in config:
        raise ValueError("config: expected score_sde's nested config with 'model' and 'data' sections")
    model, data, training = config["model"], config["data"], config.get("training", {})
    name = _get(model, "name", "model")
    if name == "ncsnpp":
        return "ncsnpp", _ncsnpp_kwargs(model, data, training)
    if name in ("ncsnv2_64", "ncsnv2_128", "ncsnv2_256"):
        return "ncsnv2", _ncsnv2_kwargs(name, model, data)
    raise ValueError(f"config: model.name={name!r} is not supported; supported: ncsnpp, ncsnv2_64, ncsnv2_128, "
                     f"ncsnv2_256")


def from_score_sde(state_dict: Mapping[str, torch.Tensor] | None, config: Mapping[str, Any]) -> nn.Module:
    """Our network for an official score_sde config, with the official weights loaded strictly.

    ``state_dict``: the checkpoint's model state dict (``ckpt['model']``, with or without the
    ``module.`` prefix of DataParallel), or None for freshly initialised weights. To use EMA
    weights, copy ``ckpt['ema']['shadow_params']`` into the official parameter order first.
    """
    arch, kwargs = network_kwargs_from_score_sde(config)
    net = NCSNpp(**kwargs) if arch == "ncsnpp" else NCSNv2(**kwargs)
    if state_dict is not None:
        load_official_state(net, state_dict)
    return net
