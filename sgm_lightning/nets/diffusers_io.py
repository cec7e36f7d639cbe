"""diffusers' NCSN++ folders in and out: ``from_diffusers(folder)`` and ``to_diffusers(net, folder, ...)``.

The NCSN++ checkpoints on the Hugging Face hub (``google/ncsnpp-*``) are a ``ScoreSdeVePipeline``
folder: ``unet/`` (a ``UNet2DModel``: ``config.json`` + ``diffusion_pytorch_model.safetensors``),
``scheduler/scheduler_config.json`` (``ScoreSdeVeScheduler``: sigma_min, sigma_max,
num_train_timesteps, snr, ...) and ``model_index.json``. That UNet2DModel is score_sde's NCSN++
built from diffusers' "Skip" blocks, and it is exactly one configuration of our
:class:`~sgm_lightning.nets.ncsnpp.NCSNpp`:

==========================================  ===============================================
diffusers ``UNet2DModel``                    our ``NCSNpp``
==========================================  ===============================================
``time_embedding_type="fourier"``            ``embedding_type="fourier"``, ``conditional``
output divided by the timestep (sigma)       ``scale_by_sigma=True``
``Skip/AttnSkipDownBlock2D``                 ``progressive_input="input_skip"``, ``progressive_combine="sum"``
``Skip/AttnSkipUpBlock2D``                   ``progressive="output_skip"``
``resnet_down`` / ``resnet_up``, FIR         ``resblock_type="biggan"``, ``fir=True``, ``fir_kernel=(1, 3, 3, 1)``
``output_scale_factor = sqrt(2)``            ``skip_rescale=True``
``block_out_channels``                       ``nf * ch_mult`` (``nf = block_out_channels[0]``)
``layers_per_block``                         ``num_res_blocks``
``Attn*`` block at level i                   ``image_size // 2**i`` in ``attn_resolutions``
``center_input_sample``                      ``not centered`` (diffusers maps x -> 2x - 1 when true)
==========================================  ===============================================

diffusers' UNet2DModel (0.42) divides its output by the timestep whenever
``time_embedding_type="fourier"`` (``sample / timesteps``), so with ``timestep = sigma`` it returns
the score, as our ``NCSNpp`` with ``scale_by_sigma``; ``ScoreSdeVePipeline`` calls it that way.

Not representable in diffusers' UNet2DModel, so :func:`to_diffusers` refuses them (one line,
naming our option): DDPM++ and every positional-embedding variant (``embedding_type="positional"``;
UNet2DModel's fourier path always divides by the timestep, its positional blocks have no input /
output pyramid and no sqrt(2) skip rescaling), ``resblock_type="ddpm"``, ``fir=False`` or another
``fir_kernel`` (diffusers hard-codes [1, 3, 3, 1]), ``skip_rescale=False``, ``progressive`` other
than ``output_skip`` and ``progressive_input`` other than ``input_skip`` with ``sum`` (so our default
CIFAR-10 NCSN++, ``progressive_input="residual"``, cannot be exported), ``scale_by_sigma=False``,
``conditional=False``, a nonlinearity other than swish/SiLU, ``num_channels != 3`` (the Skip
blocks hard-code 3 image channels), ``ch_mult[0] != 1``, and self-attention at a width below 128
(the Skip blocks' attention always has 32 GroupNorm groups; ours has min(C // 4, 32)).
:func:`from_diffusers` refuses the diffusers configurations outside the same family
(positional / learned embeddings, DDPM-style ``DownBlock2D`` etc., multi-head attention, class
conditioning, ``scale_shift`` time embedding, other GroupNorm settings), naming the config key.

Files are read with ``safetensors`` (or ``torch.load(weights_only=True)`` for a
``diffusion_pytorch_model.bin``), configs with ``json``; diffusers itself is needed neither to
import nor to export, only to run the exported folder. Loading is strict: every missing,
unexpected or mis-shaped tensor is listed in one ``ValueError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..paths import atomic_file, write_text_atomic
from ..sde import VESDE
from .attention import AttnBlock
from .diffusers_config import ncsnpp_kwargs_from_diffusers, unet_config
from .layers import Combine, GaussianFourierProjection
from .ncsnpp import NCSNpp
from .resblocks import ResBlock

UNET_CONFIG, SCHEDULER_CONFIG, MODEL_INDEX = "config.json", "scheduler_config.json", "model_index.json"
WEIGHTS_SAFE, WEIGHTS_BIN = "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"
#: old diffusers attention names (still in some published files) -> current ones
_OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass
class DiffusersImport:
    """What :func:`from_diffusers` read besides the weights: the network options and the VE SDE."""

    kwargs: dict[str, Any]           # NCSNpp(**kwargs) rebuilds the network
    sigma_min: float                 # ScoreSdeVeScheduler: sigma(t) = sigma_min (sigma_max / sigma_min)^t
    sigma_max: float
    num_scales: int                  # num_train_timesteps
    snr: float = 0.15                # the scheduler's Langevin corrector signal-to-noise ratio
    correct_steps: int = 1
    sampling_eps: float = 1e-5       # smallest time of the scheduler
    source: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the UNet2DModel config as read
    #: ScoreSdeVePipeline's samples are images in [0, 1] (it clamps them there), whatever the network's input mapping
    data_centered: bool = False

    @property
    def centered(self) -> bool:
        """The network's ``centered`` option: False iff it maps x -> 2x - 1 (``center_input_sample``)."""
        return bool(self.kwargs["centered"])

    def sde(self) -> VESDE:
        return VESDE(sigma_min=self.sigma_min, sigma_max=self.sigma_max, N=self.num_scales)

    def sgm_config(self) -> dict[str, Any]:
        """Overrides of our config (``model``, ``sde``, ``data``, ``loss``, ``sample``) for this network."""
        kw = {k: v for k, v in self.kwargs.items()
              if k not in ("image_size", "num_channels", "centered", "sigma_min", "sigma_max", "num_scales")}
        kw = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
        # data.centered must equal the network's option for our builder; see data_centered for the pixel range
        return {"model": {"arch": "ncsnpp", "kwargs": kw},
                "sde": {"name": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.num_scales},
                "data": {"image_size": self.kwargs["image_size"], "centered": self.centered},
                "loss": {"continuous": True},
                "sample": {"sampler": "pc", "options": {"predictor": "reverse_diffusion", "corrector": "langevin",
                                                        "snr": self.snr, "corrector_steps": self.correct_steps}}}


# --- the weight table: our parameter name <-> diffusers' names --------------------------------

def _module_pairs(net: NCSNpp) -> list[tuple[nn.Module, str]]:
    """Our modules with the diffusers module path holding the same weights."""
    pairs: list[tuple[nn.Module, str]] = [
        (net.embed.fourier, "time_proj"), (net.embed.dense0, "time_embedding.linear_1"),
        (net.embed.dense1, "time_embedding.linear_2"), (net.conv_in, "conv_in")]
    for i, level in enumerate(net.down):
        for j, block in enumerate(level.blocks):
            pairs.append((block, f"down_blocks.{i}.resnets.{j}"))
            if len(level.attns):
                pairs.append((level.attns[j], f"down_blocks.{i}.attentions.{j}"))
        if level.downsample is not None:  # the pyramid's FIR resampling has no weights
            pairs += [(level.downsample, f"down_blocks.{i}.resnet_down"),
                      (level.pyramid.combine, f"down_blocks.{i}.skip_conv")]
    pairs += [(net.mid["block0"], "mid_block.resnets.0"), (net.mid["attn"], "mid_block.attentions.0"),
              (net.mid["block1"], "mid_block.resnets.1")]
    for j, level in enumerate(net.up):
        pairs += [(block, f"up_blocks.{j}.resnets.{k}") for k, block in enumerate(level.blocks)]
        if level.attn is not None:
            pairs.append((level.attn, f"up_blocks.{j}.attentions.0"))
        if level.upsample is not None:
            pairs += [(level.pyramid["norm"], f"up_blocks.{j}.skip_norm"),
                      (level.pyramid["conv"], f"up_blocks.{j}.skip_conv"), (level.upsample, f"up_blocks.{j}.resnet_up")]
        else:  # the top level's output conv is UNet2DModel's own head
            pairs += [(level.pyramid["norm"], "conv_norm_out"), (level.pyramid["conv"], "conv_out")]
    return pairs


def _local_rules(module: nn.Module) -> list[tuple[str, list[str], bool]]:
    """(our local name, diffusers local names, linear): several names are concatenated along dim 0;
    ``linear``: our 1x1 conv ``(C_out, C_in, 1, 1)`` is diffusers' ``nn.Linear`` ``(C_out, C_in)``."""
    wb = lambda ours, theirs, linear=False: [(f"{ours}.weight", [f"{theirs}weight"], linear),
                                             (f"{ours}.bias", [f"{theirs}bias"], False)]
    if isinstance(module, GaussianFourierProjection):
        return [("W", ["weight"], False)]
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.GroupNorm)):
        return [("weight", ["weight"], False), ("bias", ["bias"], False)]
    if isinstance(module, Combine):
        return wb("proj", "")
    if isinstance(module, AttnBlock):
        return wb("norm", "group_norm.") + [("qkv.weight", ["to_q.weight", "to_k.weight", "to_v.weight"], True),
                                            ("qkv.bias", ["to_q.bias", "to_k.bias", "to_v.bias"], False)] + \
            wb("proj", "to_out.0.", linear=True)
    if isinstance(module, ResBlock):
        rules = wb("norm0", "norm1.") + wb("conv0", "conv1.") + wb("temb_proj", "time_emb_proj.") + \
            wb("norm1", "norm2.") + wb("conv1", "conv2.")
        return rules + (wb("skip", "conv_shortcut.") if module.skip is not None else [])
    raise TypeError(f"no diffusers rule for {type(module).__name__}")


def weight_table(net: NCSNpp) -> list[tuple[str, list[str], bool]]:
    """Every tensor of ``net.state_dict()``: (our name, the diffusers name(s) it is made of, linear)."""
    names = {m: n for n, m in net.named_modules()}
    return [(f"{names[module]}.{ours}", [f"{prefix}.{t}" for t in theirs], linear)
            for module, prefix in _module_pairs(net) for ours, theirs, linear in _local_rules(module)]


def _split(value: torch.Tensor, theirs: list[str], linear: bool) -> dict[str, torch.Tensor]:
    """One of our tensors as the diffusers tensors ``theirs`` (q, k, v split along dim 0)."""
    value = value.flatten(1) if linear else value
    return {t: part.contiguous() for t, part in zip(theirs, value.chunk(len(theirs)))}


def diffusers_state_dict(net: NCSNpp) -> dict[str, torch.Tensor]:
    """``net``'s weights under diffusers' UNet2DModel names (CPU tensors)."""
    ours = net.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, theirs, linear in weight_table(net):
        out.update(_split(ours[name].detach().cpu(), theirs, linear))
    return out


def _new_attn_name(key: str) -> str:
    """``...attentions.0.query.weight`` (diffusers < 0.15 files) -> ``...attentions.0.to_q.weight``."""
    head, _, tail = key.rpartition(".")
    prefix, _, local = head.rpartition(".")
    return f"{prefix}.{_OLD_ATTN[local]}.{tail}" if ".attentions." in key and local in _OLD_ATTN else key


def _load_diffusers_state(net: NCSNpp, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Strictly copy a diffusers UNet2DModel state dict into ``net``; every problem in one ValueError."""
    state = {_new_attn_name(k): v for k, v in state.items()}
    ours = net.state_dict()
    table = weight_table(net)
    expected = {t for _, theirs, _ in table for t in theirs}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    mismatched, converted = [], {}
    for name, theirs, linear in table:
        if any(t not in state for t in theirs):
            continue
        shapes = {t: v.shape for t, v in _split(ours[name], theirs, linear).items()}
        bad = [f"{t} {tuple(state[t].shape)} (expected {tuple(shapes[t])})"
               for t in theirs if state[t].shape != shapes[t]]
        if bad:
            mismatched += bad
            continue
        converted[name] = torch.cat([state[t] for t in theirs]).reshape(ours[name].shape)
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(keys)}): {', '.join(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]
        raise ValueError(f"{where}: the weights do not match its config.json; " + "; ".join(parts))
    net.load_state_dict(converted, strict=True)


# --- reading ----------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON config ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON config (expected an object)")
    return value


def _locate(folder: Path) -> tuple[Path, Path | None]:
    """(the UNet2DModel folder, the folder holding scheduler_config.json or None) of a pipeline or model folder."""
    if (folder / "unet" / UNET_CONFIG).is_file():
        return folder / "unet", folder / "scheduler" if (folder / "scheduler" / SCHEDULER_CONFIG).is_file() else None
    if (folder / UNET_CONFIG).is_file():
        near = [p for p in (folder, folder.parent / "scheduler") if (p / SCHEDULER_CONFIG).is_file()]
        return folder, (near[0] if near else None)
    raise FileNotFoundError(f"{folder}: not a diffusers folder (neither unet/{UNET_CONFIG} nor {UNET_CONFIG})")


def _read_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    """The UNet's tensors, by safetensors (or ``torch.load(weights_only=True)``: never pickled code)."""
    safe, pickled = unet_dir / WEIGHTS_SAFE, unet_dir / WEIGHTS_BIN
    if safe.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(safe)
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{safe}: not a readable safetensors file ({err})") from None
    if pickled.is_file():
        try:
            state = torch.load(pickled, map_location="cpu", weights_only=True)
        except Exception as err:  # not a zip/pickle, or objects outside the weights-only allowlist
            raise ValueError(f"{pickled}: not a readable weights file "
                             f"({type(err).__name__}: {str(err)[:200]})") from None
        if isinstance(state, Mapping) and all(isinstance(v, torch.Tensor) for v in state.values()):
            return dict(state)
        raise ValueError(f"{pickled}: expected a state dict of tensors")
    raise FileNotFoundError(f"{unet_dir}: no {WEIGHTS_SAFE} (or {WEIGHTS_BIN})")


def _scheduler_config(scheduler: Any) -> dict[str, Any]:
    if isinstance(scheduler, (str, os.PathLike)):
        path = Path(scheduler)
        path = path / SCHEDULER_CONFIG if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such scheduler config")
        return _read_json(path)
    if isinstance(scheduler, Mapping):
        return dict(scheduler)
    if hasattr(scheduler, "config"):
        return {"_class_name": type(scheduler).__name__, **dict(scheduler.config)}
    raise TypeError(f"scheduler: expected a folder, a {SCHEDULER_CONFIG}, a dict or a ScoreSdeVeScheduler, "
                    f"got {type(scheduler).__name__}")


#: ScoreSdeVeScheduler's defaults for keys its config may leave out
_SCHEDULER_DEFAULTS = {"num_train_timesteps": 2000, "snr": 0.15, "sigma_min": 0.01, "sigma_max": 1348.0,
                       "sampling_eps": 1e-5, "correct_steps": 1}


def _scheduler_values(config: Mapping[str, Any]) -> dict[str, Any]:
    name = config.get("_class_name", "ScoreSdeVeScheduler")
    if name != "ScoreSdeVeScheduler":
        raise ValueError(f"scheduler config: _class_name={name!r} is not supported; supported: 'ScoreSdeVeScheduler' "
                         "(the VE SDE NCSN++ was trained with)")
    c = {**_SCHEDULER_DEFAULTS, **{k: v for k, v in config.items() if k in _SCHEDULER_DEFAULTS}}
    if not 0 < float(c["sigma_min"]) < float(c["sigma_max"]):
        raise ValueError(f"scheduler config: sigma_min={c['sigma_min']!r}, sigma_max={c['sigma_max']!r}; "
                         "need 0 < sigma_min < sigma_max")
    return dict(sigma_min=float(c["sigma_min"]), sigma_max=float(c["sigma_max"]),
                num_scales=int(c["num_train_timesteps"]), snr=float(c["snr"]), correct_steps=int(c["correct_steps"]),
                sampling_eps=float(c["sampling_eps"]))


def from_diffusers(folder_or_model: str | os.PathLike | Any, scheduler: Any = None) -> tuple[NCSNpp, DiffusersImport]:
    """Our ``NCSNpp`` (eval mode, CPU) with the weights of a diffusers NCSN++, and what else was read.

    ``folder_or_model``: a ``ScoreSdeVePipeline`` folder (``unet/`` + ``scheduler/``), a bare
    ``UNet2DModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``; its
    scheduler is looked for beside it, in ``../scheduler/``), or a loaded ``UNet2DModel`` or
    pipeline object. ``scheduler``: a folder, a ``scheduler_config.json``, a dict with
    ``sigma_min`` / ``sigma_max`` / ``num_train_timesteps``, or a ``ScoreSdeVeScheduler``; it
    overrides the one found with the model and is required when none is. The network computes
    what ``UNet2DModel(x, sigma).sample`` computes, i.e. the score at noise level sigma.
    """
    found: Any = None
    if isinstance(folder_or_model, (str, os.PathLike)):
        folder = Path(folder_or_model)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such diffusers folder")
        unet_dir, found = _locate(folder)
        config, where = _read_json(unet_dir / UNET_CONFIG), str(unet_dir)
        read_state = lambda: _read_weights(unet_dir)  # after the config checks: no large read for nothing
    else:
        is_pipeline = hasattr(folder_or_model, "unet") and hasattr(folder_or_model, "scheduler")
        unet = folder_or_model.unet if is_pipeline else folder_or_model
        if not (hasattr(unet, "config") and hasattr(unet, "state_dict")):
            raise TypeError(f"from_diffusers: expected a folder, a UNet2DModel or a ScoreSdeVePipeline, "
                            f"got {type(folder_or_model).__name__}")
        found = folder_or_model.scheduler if is_pipeline else None
        config, where = {"_class_name": type(unet).__name__, **dict(unet.config)}, type(unet).__name__
        read_state = unet.state_dict
    kwargs = ncsnpp_kwargs_from_diffusers(config)
    if scheduler is None and found is None:
        raise ValueError(f"from_diffusers: no {SCHEDULER_CONFIG} found with {where}; pass scheduler= (a folder, a "
                         f"{SCHEDULER_CONFIG}, a dict with sigma_min / sigma_max, or a ScoreSdeVeScheduler)")
    sched = _scheduler_values(_scheduler_config(scheduler if scheduler is not None else found))
    kwargs.update(sigma_min=sched["sigma_min"], sigma_max=sched["sigma_max"], num_scales=sched["num_scales"])
    net = NCSNpp(**kwargs)
    _load_diffusers_state(net, read_state(), where)
    info = DiffusersImport(kwargs=kwargs, source=where, config=dict(config), **sched)
    return net.eval(), info


# --- writing ----------------------------------------------------------------------------------

def _diffusers_version() -> str:
    try:
        from importlib.metadata import version

        return version("diffusers")
    except Exception:  # not installed: the version this module was written against
        return "0.42.1"


def to_diffusers(net: nn.Module, out_dir: str | os.PathLike, sigma_min: float, sigma_max: float, *,
                 num_train_timesteps: int | None = None, snr: float = 0.15, sampling_eps: float = 1e-5,
                 correct_steps: int = 1) -> Path:
    """Write ``net`` as a ``ScoreSdeVePipeline`` folder; returns ``out_dir``.

    ``out_dir/unet/`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) loads with
    ``UNet2DModel.from_pretrained(out_dir, subfolder="unet")``, the whole folder with
    ``ScoreSdeVePipeline.from_pretrained(out_dir)``. ``sigma_min`` / ``sigma_max``: the VE SDE
    the network was trained with; ``num_train_timesteps`` (default: the network's ``num_scales``),
    ``snr``, ``sampling_eps``, ``correct_steps`` go into ``ScoreSdeVeScheduler``'s config. Each file
    is written atomically, ``model_index.json`` last. ``ValueError`` (one line, naming our option)
    for the configurations diffusers' UNet2DModel cannot represent (see the module docstring).

    The UNet computes exactly our score for any ``centered``; ``ScoreSdeVePipeline`` however
    treats its samples as images in [0, 1] (it clamps there), so its pictures are right only for
    networks trained with ``data.centered=false``.
    """
    from safetensors.torch import save

    from ..paths import check_output_dir

    net = getattr(net, "_orig_mod", net)  # torch.compile wrapper
    if not isinstance(net, NCSNpp):
        raise ValueError(f"to_diffusers: {type(net).__name__} has no diffusers counterpart; only NCSNpp (NCSN++) does")
    if not 0 < float(sigma_min) < float(sigma_max):
        raise ValueError(f"to_diffusers: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    version = _diffusers_version()
    config = unet_config(net, version)
    out = check_output_dir(out_dir, "to_diffusers: out_dir")
    steps = int(num_train_timesteps if num_train_timesteps is not None else net.config["num_scales"])
    scheduler = {"_class_name": "ScoreSdeVeScheduler", "_diffusers_version": version, "num_train_timesteps": steps,
                 "snr": float(snr), "sigma_min": float(sigma_min), "sigma_max": float(sigma_max),
                 "sampling_eps": float(sampling_eps), "correct_steps": int(correct_steps)}
    index = {"_class_name": "ScoreSdeVePipeline", "_diffusers_version": version,
             "scheduler": ["diffusers", "ScoreSdeVeScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    with atomic_file(out / "unet" / WEIGHTS_SAFE, "wb") as f:
        f.write(save(diffusers_state_dict(net), metadata={"format": "pt"}))
    for path, value in ((out / "unet" / UNET_CONFIG, config), (out / "scheduler" / SCHEDULER_CONFIG, scheduler),
                        (out / MODEL_INDEX, index)):
        write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
    return out
