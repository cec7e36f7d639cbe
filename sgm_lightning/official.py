"""Official score_sde_pytorch checkpoints as a :class:`~sgm_lightning.checkpoint.LoadedModel`.

An official checkpoint (``checkpoint_<k>.pth``) is ``{'model', 'ema', 'optimizer', 'step'}``:
``model`` is the raw state dict (keys prefixed ``module.`` by DataParallel) and
``ema = {'decay', 'num_updates', 'shadow_params'}`` holds the EMA weights as a plain list in
``model.parameters()`` order, skipping parameters with ``requires_grad=False`` (NCSN++'s
Fourier ``W``). score_sde samples and evaluates with the EMA weights, so we do too: the shadow
list is written back into the state dict by position (every shape is checked), then the state
dict goes through :func:`sgm_lightning.nets.from_score_sde`, which loads it strictly.

The config is score_sde's nested config with ``model``, ``data`` and ``training`` sections, as
a ``.json`` or ``.yaml`` file (``ml_collections``' ``config.to_dict()`` dumped). The SDE comes
from ``training.sde`` (vesde | vpsde | subvpsde) and the model's sigma / beta settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

SDE_NAMES = {"vesde": "ve", "vpsde": "vp", "subvpsde": "subvp"}
PREDICTORS = {"reverse_diffusion": "reverse_diffusion", "euler_maruyama": "euler_maruyama",
              "ancestral_sampling": "ancestral", "none": "none"}


def read_official_config(path: str | os.PathLike) -> dict:
    """score_sde's nested config from a .json / .yaml file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config: no such score_sde config file {p}")
    try:
        text = p.read_text()
        cfg = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"--config: cannot parse {p} ({err})") from None
    if not isinstance(cfg, dict) or not {"model", "data"} <= set(cfg):
        raise ValueError(f"--config: {p} must hold score_sde's nested config (model, data, training sections); "
                         "dump it with json.dumps(config.to_dict())")
    return cfg


def ema_state_dict(ckpt: dict, config: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's model state dict with the EMA shadow params written in by position."""
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError("--ckpt: not a score_sde checkpoint (no 'model' entry); expected {model, ema, step}")
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    if "ema" not in ckpt:
        return state
    shadow = list(ckpt["ema"]["shadow_params"])
    frozen = set()
    if config["model"].get("name") == "ncsnpp" and str(config["model"].get("embedding_type", "")).lower() == "fourier":
        frozen.add("all_modules.0.W")  # GaussianFourierProjection.W, requires_grad=False
    names = [k for k in state if k != "sigmas" and k not in frozen]  # parameters(), official order
    if len(names) != len(shadow):
        raise ValueError(f"--ckpt: the EMA holds {len(shadow)} tensors but the model has {len(names)} trainable "
                         "parameters; the checkpoint does not match its config")
    for name, value in zip(names, shadow):
        if tuple(value.shape) != tuple(state[name].shape):
            raise ValueError(f"--ckpt: EMA tensor for {name} has shape {tuple(value.shape)}, "
                             f"the model {tuple(state[name].shape)}")
        state[name] = value
    return state


def _our_config(config: dict):
    """Our typed config with the SDE, data scaling and sampler settings of a score_sde config."""
    from .config import Config, validate

    model, data, training = config["model"], config["data"], config.get("training", {})
    sde = SDE_NAMES.get(str(training.get("sde", "vesde")).lower())
    if sde is None:
        raise ValueError(f"--config: training.sde={training.get('sde')!r}; supported: {sorted(SDE_NAMES)}")
    cfg = OmegaConf.structured(Config)
    cfg.sde.name = sde
    for ours, theirs in (("sigma_min", "sigma_min"), ("sigma_max", "sigma_max"), ("beta_min", "beta_min"),
                         ("beta_max", "beta_max"), ("N", "num_scales")):
        if theirs in model:
            cfg.sde[ours] = type(cfg.sde[ours])(model[theirs])
    cfg.data.dataset = "cifar10" if int(data.get("num_channels", 3)) == 3 else "mnist"
    cfg.data.image_size = int(data["image_size"])
    cfg.data.centered = bool(data.get("centered", False))
    cfg.loss.continuous = bool(training.get("continuous", True))
    sampling = config.get("sampling", {})
    flat = {"sampler": "ode" if sampling.get("method") == "ode" else "pc"}
    if "predictor" in sampling:
        flat["predictor"] = PREDICTORS.get(sampling["predictor"], sampling["predictor"])
    for key in ("corrector", "snr", "n_steps_each"):
        if key in sampling:
            flat[key] = sampling[key]
    from .sampling.settings import migrate_flat  # score_sde's settings, read as our old flat section did

    section = migrate_flat(flat)
    cfg.sample.sampler, cfg.sample.options = section["sampler"], section.get("options", {})
    validate(cfg)
    return cfg


def load_official(ckpt_path: str | os.PathLike, config_path: str | os.PathLike, *, map_location="cpu"):
    """Load an official checkpoint + config into a ``LoadedModel`` (EMA weights, eval mode)."""
    from .checkpoint import LoadedModel
    from .checkpoint import build_sde
    from .nets import from_score_sde

    p = Path(ckpt_path)
    if not p.is_file():
        raise FileNotFoundError(f"--ckpt: no such score_sde checkpoint {p}")
    config = read_official_config(config_path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"--ckpt: {p} is not a readable checkpoint ({type(err).__name__}: {str(err)[:200]})") from None
    state = ema_state_dict(ckpt, config)
    try:
        net = from_score_sde(state, config)
    except ValueError as err:
        raise ValueError(f"--ckpt: {p} does not match {config_path}: {err}") from None
    cfg = _our_config(config)
    data = config["data"]
    shape = (int(data.get("num_channels", data.get("channels", 3))), int(data["image_size"]), int(data["image_size"]))
    step = ckpt.get("step")
    return LoadedModel(net=net.to(map_location).eval(), sde=build_sde(cfg.sde), continuous=bool(cfg.loss.continuous),
                       cfg=cfg, shape=shape, centered=bool(cfg.data.centered),
                       step=int(step) if step is not None else None, source=p)
