"""Typed training configs: OmegaConf structured configs built from dataclasses.

A run's config is ``Config`` below, filled from a YAML file (``configs/*.yaml``) and then from
``key=value`` overrides. An unknown key, a value of the wrong type or an impossible value
(sigma_min >= sigma_max, steps <= 0) raises ``ValueError`` naming the full key, before any data
is read or any network is built. Nothing here imports Lightning: that each ``trainer.*`` key is
an option of Lightning's Trainer is checked by :mod:`sgm_lightning.training.config` (``sgm
train`` loads its config through it).

    cfg = load_config("configs/digits.yaml", ["trainer.max_steps=100", "optim.lr=1e-3"])
    cfg.sde.sigma_max, cfg.trainer["max_steps"]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

#: the repository's configs/ folder (works for the editable install and from a clone)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = "digits"

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "lsun", "image_folder")
POINT_DATASETS = ("mixture", "moons", "swiss_roll", "checkerboard", "rings")
SEED_LIMIT = 2**63               # sample seeds: 0 <= seed < 2**63 (sgm_lightning.rng)
MAX_GRID_SAMPLES = 4096          # sample.n_samples: one grid, gathered on rank 0


@dataclass
class MixtureConfig:
    """An isotropic Gaussian mixture (sgm_lightning.analytic.GaussianMixture): K weights, K x d means, K stds."""

    weights: list[float] = field(default_factory=lambda: [0.5, 0.5])
    means: list[list[float]] = field(default_factory=lambda: [[-2.0, 0.0], [2.0, 0.0]])
    stds: list[float] = field(default_factory=lambda: [0.5, 0.5])


@dataclass
class DataConfig:
    dataset: str = "digits"          # one of IMAGE_DATASETS or POINT_DATASETS
    root: str = "data"               # where torchvision datasets / image folders live
    download: bool = False           # let torchvision download mnist / fashion_mnist / cifar10 / celeba
    image_size: int = 16             # images are resized to image_size x image_size
    centered: bool = True            # scale pixels to [-1, 1] (else [0, 1])
    random_flip: bool = False        # random horizontal flips of training images
    uniform_dequantization: bool = False  # (255 x + U[0, 1)) / 256 on training images
    lsun_category: str = "church_outdoor"
    val_fraction: float = 0.1        # held-out share of the training split for validation
    max_val: int = 2048              # at most this many validation items
    batch_size: int = 128            # per device
    val_batch_size: int = 256
    num_workers: int = 0
    split_seed: int = 0              # the train/val split (and toy point sets) depend only on it
    n_points: int = 20_000           # size of a toy point set
    bad_images: str = "fail"         # image_folder: an unreadable file stops the run (fail) or is skipped
    toy_noise: float = 0.05          # jitter of the classic 2-D toys
    mixture: MixtureConfig = field(default_factory=MixtureConfig)


@dataclass
class SDEConfig:
    name: str = "ve"                 # ve | vp | subvp | ou
    sigma_min: float = 0.01          # VE
    sigma_max: float = 50.0          # VE
    beta_min: float = 0.1            # VP / sub-VP
    beta_max: float = 20.0           # VP / sub-VP
    T: float = 5.0                   # OU horizon
    N: int = 1000                    # discretisation levels (discrete training, samplers)


@dataclass
class ModelConfig:
    arch: str = "mlp"                # a name build_network knows (mlp, ncsnpp, ncsnv2, ...)
    preset: Optional[str] = None     # a key of sgm_lightning.nets.PRESETS; kwargs override it
    kwargs: dict[str, Any] = field(default_factory=dict)
    precond: str = "none"            # none (score_sde) | edm | vp | ve: EDM Table 1 preconditioning
    sigma_data: Any = 0.5            # EDM's sigma_data (a number, or auto: the training data's std)
    channels_last: Optional[bool] = None  # image nets: null = the network's own choice per device
    compile: bool = False            # torch.compile the network for training steps (weights unchanged)
    compile_mode: str = "default"    # torch.compile mode: default | reduce-overhead | max-autotune


@dataclass
class LossConfig:
    continuous: bool = True          # t ~ U(eps, T) (else uniform discrete levels, NCSN / DDPM)
    eps: float = 1e-5                # smallest training time (score_sde)
    weighting: str = "sigma2"        # sigma2 (score_sde) | likelihood (g(t)^2) | edm (1/c_out^2)
    sigma_dist: str = "uniform_t"    # training noise levels: uniform_t | log_uniform | lognormal
    P_mean: float = -1.2             # lognormal: ln sigma ~ N(P_mean, P_std^2) (EDM)
    P_std: float = 1.2
    reduce: str = "mean"             # mean over dimensions | sum (0.5 * sum, score_sde)
    anneal_power: float = 2.0        # discrete levels: weight sigma^anneal_power (NCSN)


@dataclass
class OptimConfig:
    name: str = "adam"               # adam | adamw
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 5000         # linear warm-up of the learning rate
    schedule: str = "constant"       # constant | cosine (decay to min_lr_ratio * lr at total_steps)
    total_steps: Optional[int] = None  # cosine horizon; default trainer.max_steps
    min_lr_ratio: float = 0.0
    grad_clip: Optional[float] = 1.0  # gradient-norm clipping through Lightning; null = off
    implementation: str = "auto"     # auto (fused on CPU / CUDA) | fused | foreach | for_loop (Adam's kernels)


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.999             # the decay ceiling
    warmup: str = "score_sde"        # none | score_sde: min(decay, (1+n)/(10+n)) | power | halflife
    inv_gamma: float = 1.0           # power: 1 - (1 + n / inv_gamma)^-power
    power: float = 0.75
    halflife_steps: float = 1000.0   # halflife: beta = 0.5^(1 / h), h = min(halflife, ramp * n)
    ramp: Optional[float] = 0.05     # halflife ramp-up ratio (EDM); null = no ramp


@dataclass
class LoggingConfig:
    logger: str = "wandb"            # wandb | tensorboard | csv | none
    project: str = "sgm-lightning"
    group: Optional[str] = None      # wandb group (default: the config name)
    save_dir: str = "runs"           # logger files (wandb/, tensorboard/, csv/)
    wandb_mode: str = "auto"         # auto (online iff an API key is configured) | online | offline
    val_buckets: int = 8             # validation loss is also reported in this many sigma buckets
    log_every_n_steps: int = 50
    log_checkpoints: str = "none"    # wandb artifacts: none | end (the last checkpoint) | all (every save); online only


@dataclass
class CheckpointConfig:
    dir: str = "checkpoints"         # checkpoints/<run name>/
    save_top_k: int = 2              # best-k by validation loss, plus last.ckpt
    every_n_train_steps: Optional[int] = None  # also save every n steps (default: each validation)


@dataclass
class SampleConfig:
    sampler: str = "pc"              # a name of sgm_lightning.sampling.SAMPLERS
    options: dict[str, Any] = field(default_factory=dict)  # that sampler's keyword options (its signature)
    n_samples: int = 64              # grid size during and at the end of training
    batch_size: int = 64
    every_n_steps: int = 0           # sample grids during training (0 = off)
    at_end: bool = True              # draw a grid from the EMA net when training ends
    seed: int = 0
    trajectory: bool = False         # also record intermediate states
    trajectory_frames: int = 10      # how many, evenly spaced in steps


@dataclass
class EvalConfig:
    every_n_steps: int = 0           # FID/KID during training (0 = off)
    n_samples: int = 1000
    batch_size: int = 250
    inception_weights: Optional[str] = None  # local torch-fidelity Inception weights (no download)
    reference_stats: Optional[str] = None    # .npz with mu, sigma of the real data
    kid_subset_size: int = 100


@dataclass
class Config:
    name: Optional[str] = None       # run name (default: <config>-<time> or the scheduler job id)
    seed: int = 0
    resume: Optional[str] = None     # PATH to a .ckpt | last
    num_threads: Optional[int] = None  # torch CPU threads (null: torch's default)
    keep_freed_memory: bool = True   # glibc keeps freed memory: no page faults per step (training/allocator.py)
    data: DataConfig = field(default_factory=DataConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_steps": 1000, "accelerator": "auto"})
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def data_shape(cfg) -> tuple[int, ...]:
    """Shape of one item of a ``data`` section, without reading data: ``(C, S, S)`` for images,
    ``(d,)`` for points. Here (not in :mod:`.data`) so loading a model needs no Lightning."""
    if cfg.dataset in POINT_DATASETS:
        return (len(cfg.mixture.means[0]) if cfg.dataset == "mixture" else 2,)
    channels = 1 if cfg.dataset in ("digits", "mnist", "fashion_mnist") else 3
    return (channels, cfg.image_size, cfg.image_size)


def resolve_config_path(path: str | os.PathLike | None) -> Path:
    """``None`` -> configs/digits.yaml; a bare name ``cifar10_ncsnpp`` -> configs/<name>.yaml."""
    if path is None:
        path = CONFIG_DIR / f"{DEFAULT_CONFIG}.yaml"
    p = Path(path)
    if not p.exists() and not p.suffix and (CONFIG_DIR / f"{p.name}.yaml").exists():
        p = CONFIG_DIR / f"{p.name}.yaml"
    if not p.exists():
        names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"--config: no such file {str(path)!r}; the bundled configs are {names}")
    return p


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, then :func:`validate`. Returns a typed DictConfig."""
    p = resolve_config_path(path)
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ValueError(f"override {o!r}: write overrides as key=value, e.g. trainer.max_steps=100")
    try:
        node, over = _load_yaml(p), OmegaConf.from_dotlist(list(overrides))
        sampler = OmegaConf.select(over, "sample.sampler", default=None) or \
            OmegaConf.select(node, "sample.sampler", default=None)
        _migrate_sample(node, sampler, strict=False)  # an old flat section: as the old code read it
        _switch_sampler(node, OmegaConf.select(over, "sample.sampler", default=None))
        _migrate_sample(over, sampler, strict=True)   # sample.<option>=value: an option of that sampler
        given = OmegaConf.merge(node, over)
        cfg = OmegaConf.merge(OmegaConf.structured(Config), given)
    except OmegaConfBaseException as err:
        raise ValueError(_describe(err, p)) from None
    _arch_from_preset(cfg, given)
    validate(cfg)
    _check_image_network(cfg)
    return cfg


def _load_yaml(p: Path) -> DictConfig:
    """A YAML file as a DictConfig; syntax errors and tags (``!!python/...``) are one line with the
    file, line and column (no tag ever constructs an object: the loader is YAML's safe one)."""
    import yaml

    try:
        node = OmegaConf.load(p)
    except yaml.YAMLError as err:
        raise ValueError(_yaml_error(err, p)) from None
    except UnicodeDecodeError:
        raise ValueError(f"--config: {p} is not a text (UTF-8) YAML file") from None
    if not isinstance(node, DictConfig):
        raise ValueError(f"--config: {p} holds a YAML {type(node).__name__}, not a mapping of config keys")
    return node


def _yaml_error(err, where) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).split("\n")[0]
    return f"{where}: not valid config YAML{at}: {problem}"


def _arch_from_preset(cfg: DictConfig, given: DictConfig) -> None:
    """``model.arch`` of a ``model.preset`` is the preset's (so the saved config says what was
    trained); an ``arch`` given explicitly that disagrees with the preset is an error."""
    preset = cfg.model.preset
    if preset is None:
        return
    from .nets.presets import PRESETS

    _one_of(preset, "model.preset", sorted(PRESETS))
    arch = PRESETS[preset]["arch"]
    explicit = OmegaConf.select(given, "model.arch", default=None)
    if explicit is not None and explicit != arch:
        raise ValueError(f"model.arch: {explicit!r} conflicts with model.preset={preset} (a {arch!r} network); "
                         "drop one of the two")
    cfg.model.arch = arch


def _migrate_sample(node: DictConfig, sampler, *, strict: bool) -> None:
    """Rewrite a flat ``sample`` section of ``node`` in place into ``{sampler, options}``
    (:func:`sgm_lightning.sampling.settings.migrate_flat`)."""
    section = node.get("sample") if isinstance(node, DictConfig) else None
    if not isinstance(section, DictConfig):
        return
    from .sampling.settings import FLAT_DEFAULTS, migrate_flat

    if not any(k in FLAT_DEFAULTS for k in section):
        return
    node["sample"] = migrate_flat(OmegaConf.to_container(section, resolve=True), sampler, strict=strict)


def _switch_sampler(node: DictConfig, sampler) -> None:
    """``sample.sampler=<other>`` on the command line: the file's options written for its own
    sampler apply to the new one only where it takes them (as ``sgm sample --sampler`` does)."""
    options = OmegaConf.select(node, "sample.options", default=None)
    if sampler is None or sampler == OmegaConf.select(node, "sample.sampler", default=None) or not options:
        return
    from .sampling.settings import check_sampler, config_options

    check_sampler(sampler)
    keep = set(config_options(sampler))
    node.sample.options = {k: v for k, v in OmegaConf.to_container(options).items() if k in keep}


def config_from_yaml(text: str) -> DictConfig:
    """Rebuild and validate a config saved with :func:`to_yaml` (e.g. from a checkpoint)."""
    import yaml

    try:
        node = OmegaConf.create(text)
        if isinstance(node, DictConfig):
            _migrate_sample(node, None, strict=False)  # saved before sample.options existed
        cfg = OmegaConf.merge(OmegaConf.structured(Config), node)
    except OmegaConfBaseException as err:
        raise ValueError(_describe(err, "the saved config")) from None
    except yaml.YAMLError as err:
        raise ValueError(_yaml_error(err, "the saved config")) from None
    _arch_from_preset(cfg, OmegaConf.create())  # configs saved before arch followed the preset
    validate(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def _describe(err: OmegaConfBaseException, where) -> str:
    key = getattr(err, "full_key", None) or "?"
    msg = str(err).split("\n")[0]
    if "not in" in msg or "Key" in type(err).__name__:
        return f"{key}: unknown config key (in {where}); check the spelling against sgm_lightning/config.py"
    return f"{key}: {msg} (in {where})"


# --- value checks --------------------------------------------------------------------------
def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {msg}")


def _one_of(value, key: str, choices) -> None:
    _check(value in choices, key, f"got {value!r}; choose one of {list(choices)}")


def validate(cfg: DictConfig) -> None:
    """Raise ValueError naming the first impossible value. Does no I/O and builds nothing."""
    d, s, lo, o, e = cfg.data, cfg.sde, cfg.loss, cfg.optim, cfg.ema
    _check_finite(OmegaConf.to_container(cfg, resolve=True), "")
    _validate_run_name(cfg.name)
    for key, top in (("seed", 2**32), ("data.split_seed", 2**32), ("sample.seed", SEED_LIMIT)):
        v = OmegaConf.select(cfg, key)
        _check(0 <= v < top, key, f"must be in [0, 2**{top.bit_length() - 1}), got {v}")
    _one_of(d.dataset, "data.dataset", IMAGE_DATASETS + POINT_DATASETS)
    _one_of(d.bad_images, "data.bad_images", ("fail", "skip"))
    _validate_network_for_data(cfg)
    _check(d.image_size >= 4, "data.image_size", f"must be >= 4, got {d.image_size}")
    _check(0 < d.val_fraction < 1, "data.val_fraction", f"must be in (0, 1), got {d.val_fraction}")
    for k in ("batch_size", "val_batch_size", "max_val", "n_points"):
        _check(d[k] >= 1, f"data.{k}", f"must be >= 1, got {d[k]}")
    _check(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    if d.dataset == "mixture":
        _validate_mixture(d.mixture)
    _one_of(s.name, "sde.name", ("ve", "vp", "subvp", "ou"))
    _check(0 < s.sigma_min < s.sigma_max, "sde.sigma_min",
           f"need 0 < sde.sigma_min < sde.sigma_max, got {s.sigma_min} and {s.sigma_max}")
    _check(0 <= s.beta_min < s.beta_max, "sde.beta_min",
           f"need 0 <= sde.beta_min < sde.beta_max, got {s.beta_min} and {s.beta_max}")
    _check(s.T > 0, "sde.T", f"must be > 0, got {s.T}")
    _check(s.N >= 2, "sde.N", f"must be >= 2, got {s.N}")
    _check(0 < lo.eps < 1, "loss.eps", f"must be in (0, 1), got {lo.eps}")
    _one_of(lo.weighting, "loss.weighting", ("sigma2", "likelihood", "edm"))
    _one_of(lo.sigma_dist, "loss.sigma_dist", ("uniform_t", "log_uniform", "lognormal"))
    _check(lo.P_std > 0, "loss.P_std", f"must be > 0, got {lo.P_std}")
    _validate_precond(cfg)
    _one_of(lo.reduce, "loss.reduce", ("mean", "sum"))
    if not lo.continuous:
        _check(s.name in ("ve", "vp"), "loss.continuous",
               f"discrete levels exist for sde.name=ve (NCSN) or vp (DDPM), not {s.name!r}")
    _one_of(o.name, "optim.name", ("adam", "adamw"))
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas",
           f"need two values in [0, 1), got {list(o.betas)}")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _one_of(o.schedule, "optim.schedule", ("constant", "cosine"))
    _one_of(o.implementation, "optim.implementation", ("auto", "fused", "foreach", "for_loop"))
    _check(o.total_steps is None or o.total_steps >= 1, "optim.total_steps", f"must be >= 1, got {o.total_steps}")
    _check(o.schedule != "cosine" or o.total_steps or cfg.trainer.get("max_steps", -1) not in (None, -1),
           "optim.total_steps", "the cosine schedule needs optim.total_steps or trainer.max_steps")
    _check(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", f"must be > 0 or null, got {o.grad_clip}")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
    _one_of(e.warmup, "ema.warmup", ("none", "score_sde", "power", "halflife"))
    _check(0 <= e.decay < 1, "ema.decay", f"must be in [0, 1), got {e.decay}")
    _check(e.halflife_steps > 0, "ema.halflife_steps", f"must be > 0, got {e.halflife_steps}")
    _check(e.inv_gamma > 0 and e.power > 0, "ema.power", "ema.inv_gamma and ema.power must be > 0")
    _validate_trainer(cfg)
    lg = cfg.logging
    _one_of(lg.logger, "logging.logger", ("wandb", "tensorboard", "csv", "none"))
    _one_of(lg.wandb_mode, "logging.wandb_mode", ("auto", "online", "offline"))
    _check(not (cfg.model.channels_last and cfg.model.preset is None and cfg.model.arch == "mlp"),
           "model.channels_last", "is for image networks; the mlp takes points (drop it)")
    _one_of(cfg.model.compile_mode, "model.compile_mode",
            ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"))
    _one_of(lg.log_checkpoints, "logging.log_checkpoints", ("none", "end", "all"))
    _check(lg.log_checkpoints == "none" or lg.logger == "wandb", "logging.log_checkpoints",
           f"uploads wandb artifacts: set logging.logger=wandb (got {lg.logger}) or log_checkpoints=none")
    _check(lg.val_buckets >= 1, "logging.val_buckets", f"must be >= 1, got {lg.val_buckets}")
    _check(cfg.checkpoint.save_top_k >= -1, "checkpoint.save_top_k", "must be >= -1 (-1 keeps all)")
    sm = cfg.sample
    for k in ("n_samples", "batch_size", "trajectory_frames"):
        _check(sm[k] >= 1, f"sample.{k}", f"must be >= 1, got {sm[k]}")
    _check(sm.every_n_steps >= 0, "sample.every_n_steps", f"must be >= 0, got {sm.every_n_steps}")
    _check(sm.n_samples <= MAX_GRID_SAMPLES, "sample.n_samples",
           f"at most {MAX_GRID_SAMPLES} (one grid image, gathered in memory), got {sm.n_samples}; "
           "draw more with `sgm sample`")
    _validate_sampler(sm)
    ev = cfg.eval
    for k in ("n_samples", "batch_size", "kid_subset_size"):
        _check(ev[k] >= 1, f"eval.{k}", f"must be >= 1, got {ev[k]}")
    _check(ev.every_n_steps >= 0, "eval.every_n_steps", f"must be >= 0, got {ev.every_n_steps}")
    _check(cfg.num_threads is None or cfg.num_threads >= 1, "num_threads",
           f"must be >= 1 or null, got {cfg.num_threads}")
    if cfg.resume not in (None, "last"):
        _check(str(cfg.resume).endswith(".ckpt"), "resume", f"give a .ckpt path or 'last', got {cfg.resume!r}")


def _check_finite(node, key: str) -> None:
    """Every float in the config is finite: inf or nan train to NaN (and report success)."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite(v, f"{key}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f"{key}: must be a finite number, got {node}")


def _validate_run_name(name) -> None:
    """A run name is a folder under checkpoint.dir: relative, no '..', no empty parts."""
    if name is None:
        return
    parts = str(name).replace("\\", "/").split("/")
    ok = str(name).strip() != "" and not os.path.isabs(str(name)) and all(q not in ("", ".", "..") for q in parts)
    _check(ok, "name", f"{name!r} must be a relative folder name inside checkpoint.dir (no '..', not absolute)")


def _validate_network_for_data(cfg: DictConfig) -> None:
    """Point data need the MLP (an image network would fail on the first batch with a shape error)."""
    m, ds = cfg.model, cfg.data.dataset
    mlp = m.preset is None and m.arch == "mlp"
    if ds in POINT_DATASETS:
        _check(mlp, "model.preset" if m.preset is not None else "model.arch",
               f"data.dataset={ds} is a point dataset; it needs model.arch=mlp and no model.preset "
               f"(got arch={m.arch!r}, preset={m.preset!r})")



def _check_image_network(cfg: DictConfig) -> None:
    """An image dataset needs an image network (checked for configs a user writes; a config made
    in code, e.g. for an official checkpoint, may carry its network separately)."""
    m, ds = cfg.model, cfg.data.dataset
    _check(ds in POINT_DATASETS or not (m.preset is None and m.arch == "mlp"), "model.arch",
           f"data.dataset={ds} is an image dataset and model.arch=mlp works on points; set model.preset "
           "(e.g. ncsnpp_digits) or an image model.arch")


def _validate_sampler(sm) -> None:
    """``sample.sampler`` is a sampler and ``sample.options`` are options of it (its signature),
    checked here so a typo fails before training."""
    from .sampling.settings import check_options, check_sampler

    check_sampler(sm.sampler)
    check_options(sm.sampler, OmegaConf.to_container(sm.options, resolve=True))


def _validate_precond(cfg: DictConfig) -> None:
    m, lo = cfg.model, cfg.loss
    _one_of(m.precond, "model.precond", ("none", "edm", "vp", "ve"))
    sd = m.sigma_data
    ok = sd == "auto" or (isinstance(sd, (int, float)) and not isinstance(sd, bool) and 0 < sd < math.inf)
    _check(ok, "model.sigma_data", f"must be a positive number or auto, got {sd!r}")
    if not lo.continuous:
        _check(m.precond == "none", "model.precond",
               "preconditioning needs continuous noise levels (loss.continuous=true)")
        _check(lo.sigma_dist == "uniform_t", "loss.sigma_dist",
               "discrete levels are drawn uniformly; loss.sigma_dist needs loss.continuous=true")


def _validate_mixture(m) -> None:
    k = len(m.weights)
    _check(k >= 1 and all(w > 0 for w in m.weights), "data.mixture.weights", "need K >= 1 positive weights")
    _check(math.isclose(sum(m.weights), 1.0, rel_tol=1e-6), "data.mixture.weights",
           f"must sum to 1, got {sum(m.weights)}")
    _check(len(m.means) == k and len(m.stds) == k, "data.mixture.means",
           f"need K={k} means and K stds, got {len(m.means)} and {len(m.stds)}")
    dims = {len(mu) for mu in m.means}
    _check(len(dims) == 1 and min(dims) >= 1, "data.mixture.means", "all means need the same dimension >= 1")
    _check(all(sd > 0 for sd in m.stds), "data.mixture.stds", "must all be > 0")


#: Trainer options the config sets elsewhere (the builder fills them)
_RESERVED = {"gradient_clip_val": "optim.grad_clip", "log_every_n_steps": "logging.log_every_n_steps",
             "default_root_dir": "checkpoint.dir", "enable_checkpointing": "checkpoint.save_top_k"}


def _validate_trainer(cfg: DictConfig) -> None:
    """The ``trainer`` values; that each key is a Trainer option is checked by
    :func:`sgm_lightning.training.config.check_trainer_options` (it needs Lightning)."""
    for key in cfg.trainer:
        if key in _RESERVED:
            raise ValueError(f"trainer.{key}: set {_RESERVED[key]} instead (the builder passes it to the Trainer)")
    for key in ("max_steps", "max_epochs", "accumulate_grad_batches", "num_nodes"):
        v = cfg.trainer.get(key)
        if v is not None and not (isinstance(v, int) and (v >= 1 or (key in ("max_steps", "max_epochs") and v == -1))):
            raise ValueError(f"trainer.{key}: must be a positive integer, got {v!r}")
    lim = cfg.trainer.get("limit_train_batches")
    if lim is not None and not isinstance(lim, bool) and isinstance(lim, (int, float)) and lim <= 0:
        raise ValueError(f"trainer.limit_train_batches: must be > 0 (a count or a fraction), got {lim}; "
                         "with no training batches nothing would be trained")
    dev = cfg.trainer.get("devices")
    if isinstance(dev, int) and not isinstance(dev, bool) and dev != -1 and dev < 1:
        raise ValueError(f"trainer.devices: must be >= 1, -1 (all) or auto, got {dev}")
    if cfg.trainer.get("max_steps", -1) == -1 and cfg.trainer.get("max_epochs") is None:
        raise ValueError("trainer.max_steps: set trainer.max_steps (or trainer.max_epochs) so training ends")


def check_accelerator(accelerator, key: str) -> None:
    """``gpu``/``cuda``/``mps`` only when such a device is visible (Lightning's own error is a
    traceback); called before a run writes anything."""
    import torch

    name = str(accelerator).lower()
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key}: {accelerator!r} but no CUDA GPU is visible (torch.cuda.is_available() is "
                         "False); use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{key}: 'mps' but no Apple GPU is available; use cpu or auto")
    if name not in ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu"):
        raise ValueError(f"{key}: unknown accelerator {accelerator!r}; choose auto, cpu or gpu")
