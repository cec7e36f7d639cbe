"""Build and load score models for inference, and export them as safetensors.

:func:`build_sde` and :func:`build_net` turn a config's ``sde`` / ``model`` sections into the
forward process and the score network (training builds its model with them too);
:func:`load_model` reads trained weights. None of it imports Lightning.

Two formats, both loaded strictly (every missing or unexpected key is reported) and safely
(``torch.load(weights_only=True)`` / safetensors, never pickled code):

* a Lightning ``.ckpt`` written by ``sgm train``: raw weights under ``state_dict`` (prefix
  ``net.``), the EMA shadow under ``ema``, the resolved config as YAML text under ``sgm_config``;
* an export folder: ``model.safetensors`` (the EMA weights) + ``config.yaml``
  (:func:`export`). A path to the ``.safetensors`` file itself also works.

A diffusers NCSN++ folder (a ``ScoreSdeVePipeline`` with ``model_index.json`` / ``unet/``, or a
bare ``UNet2DModel`` folder whose ``config.json`` names it) loads too, through
:func:`sgm_lightning.nets.diffusers_io.from_diffusers` (no diffusers install needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from .config import config_from_yaml, data_shape, to_yaml
from .nets.precond import precond_from_config
from .nets.wrapper import score_fn_from_net
from .paths import set_file_mode
from .sde import SDE, ScoreFn, get_sde

WEIGHTS, CONFIG = "model.safetensors", "config.yaml"
#: beside a diffusers folder written by ``sgm export --format diffusers``: what diffusers' files
#: cannot say: ``{"data_centered": bool, "sample": {"sampler": ..., "options": {...}}}``
DIFFUSERS_INFO = "sgm_lightning.json"
__all__ = ["LoadedModel", "build_net", "build_sde", "data_shape", "export", "load_diffusers", "load_model"]


def build_sde(sde_cfg) -> SDE:
    """The forward process of a ``sde`` config section."""
    name = sde_cfg.name
    if name == "ve":
        return get_sde("ve", sigma_min=sde_cfg.sigma_min, sigma_max=sde_cfg.sigma_max, N=sde_cfg.N)
    if name in ("vp", "subvp"):
        return get_sde(name, beta_min=sde_cfg.beta_min, beta_max=sde_cfg.beta_max, N=sde_cfg.N)
    return get_sde(name, T=sde_cfg.T, N=sde_cfg.N)


def build_net(model_cfg, shape: tuple[int, ...], sde_cfg=None, centered: bool | None = None) -> nn.Module:
    """The score network of a ``model`` section for data items of ``shape``.

    ``arch=mlp`` builds :class:`~sgm_lightning.nets.mlp.ScoreMLP` (points). Any other arch, or a
    ``preset`` of ``sgm_lightning.nets.PRESETS``, goes through ``nets.build_network`` with the
    data shape, ``data.centered`` and the sigma ladder of ``sde`` filled in (so the network and
    the SDE always agree); ``model.kwargs`` override the preset. A keyword the network does not
    take is reported as a ``model.kwargs`` error.
    """
    kwargs = dict(model_cfg.kwargs)
    try:
        if model_cfg.preset is None and model_cfg.arch == "mlp":
            from .nets.mlp import ScoreMLP

            if model_cfg.get("precond", "none") != "none":
                kwargs["scale_by_sigma"] = False
            return ScoreMLP(dim=shape[0], **kwargs)
        from . import nets

        base: dict = {"arch": model_cfg.arch}
        if model_cfg.preset is not None:
            if model_cfg.preset not in nets.PRESETS:
                raise ValueError(f"model.preset: unknown {model_cfg.preset!r}; choose one of {sorted(nets.PRESETS)}")
            base = dict(nets.PRESETS[model_cfg.preset])
        auto: dict = {}
        if len(shape) == 3:
            auto.update(num_channels=shape[0], image_size=shape[-1])
        if centered is not None:
            auto["centered"] = bool(centered)
        if model_cfg.get("precond", "none") != "none":  # F sees c_in x and learns a unit-scale target
            auto["centered"] = True
            if base.get("arch") == "ncsnpp":
                auto["scale_by_sigma"] = False
        if sde_cfg is not None and sde_cfg.name == "ve":
            auto.update(sigma_min=sde_cfg.sigma_min, sigma_max=sde_cfg.sigma_max, num_scales=sde_cfg.N)
        for k, v in auto.items():
            if k in kwargs and kwargs[k] != v:
                raise ValueError(f"model.kwargs.{k}: {kwargs[k]!r} disagrees with the data/sde config ({v!r}); drop it")
        kwargs = {**base, **auto, **kwargs}
        arch = kwargs.pop("arch")
        cl = model_cfg.get("channels_last")
        if cl is not None and arch == "ncsnpp":  # NCSN++ converts its activations itself
            kwargs.setdefault("memory_format", "channels_last" if cl else "contiguous")
        try:
            net = nets.build_network(arch, **kwargs)
            return net.to(memory_format=torch.channels_last) if cl and arch != "ncsnpp" else net
        except (ValueError, RuntimeError, ZeroDivisionError, AssertionError) as err:  # e.g. GroupNorm of nf=15
            given = ", ".join(f"{k}={v}" for k, v in dict(model_cfg.kwargs).items()) or "no model.kwargs"
            raise ValueError(f"model.kwargs: the {arch} network cannot be built with {given}: "
                             f"{' '.join(str(err).split())}") from None
    except TypeError as err:
        raise ValueError(f"model.kwargs: {err}") from None


def weights_digest(net: nn.Module) -> str:
    """sha256 over the network's tensors (names, dtypes, shapes, bytes, in name order): the same
    weights give the same digest whatever file they came from (training checkpoint, export,
    another memory layout)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class LoadedModel:
    """A network with its EMA weights (eval mode) and everything needed to sample from it."""

    net: nn.Module
    sde: SDE
    continuous: bool
    cfg: DictConfig
    shape: tuple[int, ...]          # one item: (C, H, W) for images, (d,) for points
    centered: bool                  # images live in [-1, 1] (else [0, 1])
    step: int | None = None         # training step of the checkpoint, when known
    source: Path = field(default_factory=Path)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def image_size(self) -> int | None:
        return self.shape[-1] if len(self.shape) == 3 else None

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def score_fn(self) -> ScoreFn:
        """``score_fn(x, t)`` of the EMA network (see :func:`sgm_lightning.nets.score_fn_from_net`)."""
        return score_fn_from_net(self.net, self.sde, continuous=self.continuous,
                                 precond=precond_from_config(self.cfg.model))

    def to(self, device) -> LoadedModel:
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def weights_sha256(self) -> str:
        """The identity of the weights (see :func:`weights_digest`): a ``.ckpt`` and its export agree."""
        return weights_digest(self.net)

    def sample(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int = 0, device=None,
               batch_size: int | None = None, *, exact: bool = True, **options) -> torch.Tensor:
        """``n`` samples ``(n, *shape)``, float32 on the CPU; images clipped to the data range
        ([-1, 1] when ``centered``, else [0, 1]). No autograd graph is kept (inference mode).

        Sample k is ``sgm sample``'s image k for the same checkpoint, sampler settings and seed:
        its noise comes from ``rng.sample_generators(seed, [k])`` (through
        :func:`sgm_lightning.sampling.draw_samples`) and the settings are resolved as ``sgm
        sample`` resolves them (:func:`sgm_lightning.sampling.sampler_settings`: the
        checkpoint's ``sample`` section, then ``sampler``, ``steps`` and ``options`` such as
        ``snr=0.1``; Langevin norms per sample). ``exact`` (default, as ``sgm sample``): every
        sample runs alone, so the bits do not depend on ``batch_size`` (on the CPU with one
        intra-op thread, as ``sgm sample`` pins it); ``exact=False`` batches ``batch_size``
        samples per call (much faster on GPUs; equal to float rounding). ``device``: where to
        sample (default: the network's device; the network moves there).
        """
        from .rng import SEED_LIMIT
        from .sampling import draw_samples, sampler_settings

        if n < 1 or not 0 <= seed < SEED_LIMIT or (batch_size is not None and batch_size < 1):
            raise ValueError(f"sample: need n >= 1, 0 <= seed < 2**63 and batch_size >= 1; got n={n}, seed={seed}, "
                             f"batch_size={batch_size}")
        name, opts = sampler_settings(self.cfg.sample, sampler=sampler, steps=steps, per_sample=True, **options)
        device = torch.device(device) if device is not None else self.device
        self.net.to(device).eval()
        batch, score_fn, threads = batch_size or 64, self.score_fn(), torch.get_num_threads()
        if exact and device.type == "cpu":
            torch.set_num_threads(1)  # CPU kernels split reductions by thread count: pin it, as sgm sample does
        try:
            with torch.inference_mode():
                parts = [draw_samples(score_fn, self.sde, self.shape, list(range(i, min(i + batch, n))), seed=seed,
                                      sampler=name, options=opts, exact=exact, device=device)[0].float().cpu()
                         for i in range(0, n, batch)]
        finally:
            torch.set_num_threads(threads)
        x = torch.cat(parts)
        if self.is_image:
            x = x.clamp(-1.0 if self.centered else 0.0, 1.0)
        return x

    def to_pil(self, images: torch.Tensor) -> list:
        """Images ``(B, C, H, W)`` in this model's data range -> a list of ``PIL.Image`` (L or RGB)."""
        from PIL import Image

        from .images import to_uint8

        pixels = to_uint8(images, self.centered).numpy()
        return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in pixels]

    def save_grid(self, images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
        """Write images ``(B, C, H, W)`` in this model's data range as one PNG grid (``nrow`` per row,
        default near-square); returns the path."""
        from .images import make_grid, save_png, to_uint8

        return save_png(path, make_grid(to_uint8(images, self.centered), nrow=nrow))


def _read_ckpt(path: Path, map_location) -> dict:
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, not a zip/pickle, or holds non-allowlisted objects
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(ckpt, dict) or "sgm_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not an sgm-lightning checkpoint (no sgm_config / state_dict); "
                         "train with `sgm train` or pass an export folder")
    return ckpt


def _weights_from_ckpt(ckpt: dict) -> dict[str, torch.Tensor]:
    """The network's weights with the EMA shadow in place of the raw parameters."""
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    if "ema" in ckpt:
        for name, value in ckpt["ema"]["shadow"].items():
            state[name] = value
    return state


def _read_export(folder: Path, weights: Path) -> tuple[str, dict[str, torch.Tensor], int | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing; an export folder holds {WEIGHTS} and {CONFIG}")
    try:
        state = load_file(weights)
        with safe_open(weights, "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from None
    step = int(meta["step"]) if meta.get("step", "").isdigit() else None
    return cfg_path.read_text(), state, step


def load_model(path: str | os.PathLike, *, map_location="cpu") -> LoadedModel:
    """Load a ``.ckpt``, an export folder, its ``model.safetensors``, or a diffusers NCSN++ folder
    (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such checkpoint file or export folder")
    if is_diffusers_folder(p):
        return load_diffusers(p, map_location=map_location)
    if p.is_dir() or p.suffix == ".safetensors":
        folder, weights = (p, p / WEIGHTS) if p.is_dir() else (p.parent, p)
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing; export a checkpoint with `sgm export`")
        cfg_text, state, step = _read_export(folder, weights)
    else:
        ckpt = _read_ckpt(p, map_location)
        cfg_text, state, step = ckpt["sgm_config"], _weights_from_ckpt(ckpt), ckpt.get("global_step")
    cfg = config_from_yaml(cfg_text)
    shape = data_shape(cfg.data)
    net = build_net(cfg.model, shape, cfg.sde, cfg.data.centered)
    _load_strict(net, state, p)
    net.to(map_location).eval()
    return LoadedModel(net=net, sde=build_sde(cfg.sde), continuous=bool(cfg.loss.continuous), cfg=cfg,
                       shape=shape, centered=bool(cfg.data.centered), step=step, source=p)


def is_diffusers_folder(p: Path) -> bool:
    """A diffusers pipeline or ``UNet2DModel`` folder (not one of our export folders)."""
    if not p.is_dir() or (p / WEIGHTS).is_file():
        return False
    if (p / "model_index.json").is_file() or (p / "unet" / "config.json").is_file():
        return True
    try:
        import json

        return json.loads((p / "config.json").read_text()).get("_class_name") == "UNet2DModel"
    except (OSError, ValueError, AttributeError):
        return False


def load_diffusers(folder: str | os.PathLike, *, map_location="cpu") -> LoadedModel:
    """A diffusers NCSN++ folder as a :class:`LoadedModel`: our ``NCSNpp`` with its weights, the VE
    SDE of its ``ScoreSdeVeScheduler``, and PC sampler settings as the scheduler's (reverse
    diffusion + Langevin, its ``snr`` and ``correct_steps``). Images are in [0, 1]
    (``centered=False``), as ``ScoreSdeVePipeline`` returns them, whatever the network's own input
    mapping (``center_input_sample``, which ``cfg.data.centered`` records for the builder). A
    folder written by ``sgm export`` also holds :data:`DIFFUSERS_INFO`, which restores the data
    range and the sampler settings of the checkpoint it came from."""
    import yaml

    from .nets.diffusers_io import from_diffusers

    net, info = from_diffusers(folder)
    over = info.sgm_config()
    over["data"]["dataset"] = "cifar10"  # three channels, image_size from the UNet: data_shape -> (3, S, S)
    # ScoreSdeVePipeline's sampler: reverse diffusion + Langevin with the scheduler's snr / steps
    over["sample"] = {"sampler": "pc", "options": {"predictor": "reverse_diffusion", "corrector": "langevin",
                                                  "snr": info.snr, "corrector_steps": info.correct_steps}}
    centered = bool(info.data_centered)
    extra = Path(folder) / DIFFUSERS_INFO
    if extra.is_file():
        import json

        try:
            saved = json.loads(extra.read_text())
            centered = bool(saved["data_centered"])
            over["sample"] = saved.get("sample", over["sample"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{extra}: not a readable {DIFFUSERS_INFO} ({err})") from None
    cfg = config_from_yaml(yaml.safe_dump(over))  # the defaults with these, validated
    shape = data_shape(cfg.data)
    return LoadedModel(net=net.to(map_location).eval(), sde=info.sde(), continuous=True, cfg=cfg, shape=shape,
                       centered=centered, step=None, source=Path(folder))


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{where}: the weights do not match the network its config describes; "
            f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}, shape mismatches {wrong[:10]}"
        )
    net.load_state_dict(state, strict=True)


def export(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the EMA weights of a checkpoint as ``out_dir/model.safetensors`` + ``config.yaml``."""
    from safetensors.torch import save_file

    model = load_model(ckpt_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    meta = {"format": "sgm-lightning", "step": str(model.step if model.step is not None else "")}
    save_file(state, str(out / WEIGHTS), metadata=meta)
    (out / CONFIG).write_text(to_yaml(model.cfg))
    for name in (WEIGHTS, CONFIG):  # safetensors writes through a private (0600) temp file
        set_file_mode(out / name)
    return out
