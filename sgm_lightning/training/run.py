"""``train(cfg)``: train a score model from a config (what ``sgm train`` runs).

Builds everything from the typed config (:mod:`sgm_lightning.config`): the data module, the
LightningModule, the logger (wandb, offline unless an API key is configured; TensorBoard; CSV),
checkpointing into ``checkpoints/<run name>/`` (the run folder, :func:`resolve_run`) and a
Lightning Trainer that receives every ``trainer.*`` option. After training, rank 0 draws a
sample grid from the EMA network into the run folder.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ..config import to_yaml

RUN_NAME_ENV = "SGM_RUN_NAME"  # shared by the DDP worker processes Lightning launches


@dataclass
class TrainResult:
    module: object
    trainer: object
    run_dir: Path
    grid: Path | None


# --- the run folder ------------------------------------------------------------------------
def resolve_run(cfg, config_name: str) -> tuple[str, Path, str | None]:
    """``(run name, run folder, checkpoint to resume from or None)``; checks resume paths first.

    ``resume=PATH`` continues in the checkpoint's own folder (also after the run was moved or
    renamed) unless ``name`` is given. A new run never reuses a folder that holds a run
    (:data:`RUN_FILES`): ``name=`` of one is refused before any work, and the default
    timestamped name skips to ``-2``, ``-3``, ... when its folder exists.
    """
    root = Path(cfg.checkpoint.dir)
    resume, name = cfg.resume, cfg.name or os.environ.get(RUN_NAME_ENV)
    if resume == "last":
        if name:
            ckpt = root / name / "last.ckpt"
        else:
            found = sorted(root.glob(f"{config_name}-*/last.ckpt"), key=lambda p: p.stat().st_mtime)
            ckpt = found[-1] if found else root / f"{config_name}-*" / "last.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"resume=last: no checkpoint at {str(ckpt)!r}; pass resume=PATH or name=RUN")
        return name or ckpt.parent.name, ckpt.parent, str(ckpt)
    if resume is not None:
        ckpt = Path(resume)
        if not ckpt.is_file():
            raise FileNotFoundError(f"resume: no such checkpoint {str(ckpt)!r}")
        if name:
            return name, root / name, str(ckpt)
        return ckpt.parent.name, ckpt.parent, str(ckpt)
    if not name:  # every process of a multi-process launch must agree on it: prefer the job's id
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID", "none")
        name = f"{config_name}-{job}" if job != "none" else _fresh_name(root, config_name)
    run_dir = root / name
    held = [f for f in RUN_FILES if (run_dir / f).exists()]
    if held and not os.environ.get(RUN_NAME_ENV):  # the DDP workers of this very run see its files
        raise ValueError(f"name: {run_dir} already holds a run ({', '.join(held)}); continue it with "
                         f"resume=last name={name}, or choose another name=")
    return name, run_dir, None


#: files that make a folder a run: a new run refuses a folder holding any of them
RUN_FILES = ("last.ckpt", "config.yaml")


def _fresh_name(root: Path, config_name: str) -> str:
    """``<config>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``, ... when a run started in the same second."""
    base = f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, k = base, 1
    while (root / name).exists():
        k += 1
        name = f"{base}-{k}"
    return name


# --- builders --------------------------------------------------------------------------
def build_callbacks(cfg, run_dir: Path) -> list:
    """Checkpointing (last + best-k by val/loss), sample grids (EMA weights), the progress bar."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from .guards import NonFiniteGuard, SaveLast

    ck = cfg.checkpoint
    callbacks = [
        NonFiniteGuard(cfg),  # first: a non-finite state stops the run before anything saves it
        SaveLast(run_dir / "last.ckpt"),
        # one last.ckpt, replaced in place (no last-v1.ckpt when a resumed run finds it there)
        ModelCheckpoint(
            dirpath=run_dir, filename="step{step:07d}-loss{val/loss:.4f}", auto_insert_metric_name=False,
            monitor="val/loss", mode="min", save_top_k=ck.save_top_k, save_last=True,
            every_n_train_steps=ck.every_n_train_steps, enable_version_counter=False,
        ),
    ]
    if cfg.sample.at_end or cfg.sample.every_n_steps:
        from .callbacks import SamplingCallback

        callbacks.append(SamplingCallback.from_config(cfg, out_dir=run_dir / "samples"))
    if cfg.eval.every_n_steps:  # FID/KID of EMA samples (needs eval.reference_stats, eval.inception_weights)
        from .callbacks import FIDCallback

        callbacks.append(FIDCallback.from_config(cfg))
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(step_progress_bar())
    return callbacks


def step_progress_bar(**kwargs):
    """A rich progress bar counting optimizer steps: ``train step ━━━ 1200/3000`` (not the
    ``Epoch 21/-2`` Lightning shows when a run is set by ``max_steps``); resumed runs start at
    their step. Without ``max_steps`` it is Lightning's per-epoch bar."""
    from pytorch_lightning.callbacks import RichProgressBar

    class StepProgressBar(RichProgressBar):
        def _by_step(self) -> bool:
            return (self.trainer.max_steps or -1) > 0

        @property
        def total_train_batches(self):
            return self.trainer.max_steps if self._by_step() else super().total_train_batches

        def _get_train_description(self, current_epoch: int) -> str:
            return "train step" if self._by_step() else super()._get_train_description(current_epoch)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if not self._by_step():
                return super().on_train_epoch_start(trainer, pl_module)
            if self.progress is not None and self.train_progress_bar_id is None:  # one bar for the whole run
                self._initialize_train_progress_bar_id()
            self.refresh()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if not self._by_step():
                return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if not self.is_disabled and self.train_progress_bar_id is None:
                self._initialize_train_progress_bar_id()
            self._update(self.train_progress_bar_id, trainer.global_step)
            self._update_metrics(trainer, pl_module)
            self.refresh()

    return StepProgressBar(**{"leave": True, **kwargs})


def wandb_offline(mode: str) -> bool:
    """``auto``: online only when an API key is configured (env or ~/.netrc); never prompts."""
    if mode != "auto":
        return mode == "offline"
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def build_logger(cfg, run_name: str, config_name: str, resume_index: int = 0):
    """The ``logging.logger``; a resumed run (``resume_index`` N >= 1) logs CSV to
    ``<run>-resume-N`` because Lightning's CSV logger deletes an existing metrics.csv."""
    lg = cfg.logging
    save_dir = Path(lg.save_dir)
    if lg.logger == "none":
        return False
    if lg.logger == "csv":
        from pytorch_lightning.loggers import CSVLogger

        version = f"{run_name}-resume-{resume_index}" if resume_index else run_name
        return CSVLogger(save_dir / "csv", name=config_name, version=version)
    if lg.logger == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir / "tensorboard", name=config_name, version=run_name)
    from pytorch_lightning.loggers import WandbLogger

    offline = wandb_offline(lg.wandb_mode)
    if offline:
        os.environ["WANDB_MODE"] = "offline"  # no login prompt, no network
    save_dir.mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=lg.project, name=run_name, group=lg.group or config_name, save_dir=str(save_dir),
        offline=offline, config=OmegaConf.to_container(cfg, resolve=True), id=run_name.replace("/", "-"),
        log_model={"none": False, "end": True, "all": "all"}[lg.get("log_checkpoints", "none")],
    )
    # Lightning always passes anonymous=None to wandb.init, and wandb >= 0.19 warns that the
    # setting "has no effect" whenever it is passed at all
    if logger._wandb_init.get("anonymous", 0) is None:
        del logger._wandb_init["anonymous"]
    return logger


def build_trainer(cfg, callbacks: list, logger):
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from .guards import AtomicCheckpointIO

    opts = dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    plugins = opts.pop("plugins", None) or []
    plugins = (list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]) + [AtomicCheckpointIO()]
    try:
        return pl.Trainer(
            callbacks=callbacks, logger=logger, gradient_clip_val=cfg.optim.grad_clip, plugins=plugins,
            log_every_n_steps=cfg.logging.log_every_n_steps, default_root_dir=cfg.checkpoint.dir, **opts,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as err:  # e.g. devices=5 on 2 GPUs
        raise ValueError(f"trainer: {' '.join(str(err).split())}") from None


def check_batches(datamodule, cfg, world: int) -> None:
    """At least one full training batch per device (batches are drop_last), before training."""
    n, held_out = len(datamodule.train_set), len(datamodule.val_set)
    per_device = n // max(1, world)
    if per_device < cfg.data.batch_size:
        devices = f"{world} device{'s' if world > 1 else ''}"
        raise ValueError(
            f"data.batch_size: {cfg.data.batch_size} per device is more than the {n} training items "
            f"({per_device} per device on {devices}) after holding out {held_out} for validation; "
            f"set data.batch_size <= {per_device} or use more data"
        )


def check_paths(cfg, run_dir: Path) -> None:
    """Every folder the run writes is a folder we can write, checked before anything is written."""
    from ..paths import check_output_dir

    check_output_dir(run_dir, "checkpoint.dir")
    lg = cfg.logging
    if lg.logger == "wandb" and lg.log_checkpoints != "none" and wandb_offline(lg.wandb_mode):
        raise ValueError(f"logging.log_checkpoints={lg.log_checkpoints}: wandb is offline here (no API key, or "
                         "wandb_mode=offline), so checkpoints cannot be uploaded; log in (wandb login) and set "
                         "logging.wandb_mode=online, or set logging.log_checkpoints=none")
    if cfg.logging.logger != "none":
        check_output_dir(cfg.logging.save_dir, "logging.save_dir")


# --- the run -------------------------------------------------------------------------------
def train(cfg, config_name: str = "run", callbacks: list | None = None,
          resume_overrides: list[str] | None = None) -> TrainResult:
    """Train from a validated config; returns the module, trainer, run folder and sample grid.

    ``callbacks``: extra Lightning callbacks, appended to :func:`build_callbacks`'s.
    With ``resume``, the run continues with the checkpoint's config; ``resume_overrides`` (the
    keys given on the command line; default: every key where ``cfg`` differs) may change only
    the keys of :data:`sgm_lightning.resume.RESUME_SAFE`. Raises
    :class:`~sgm_lightning.errors.RunFailed` when the loss turns non-finite and
    :class:`~sgm_lightning.errors.Interrupted` after a Ctrl-C (last.ckpt saved).
    """
    from ..config import check_accelerator
    from .config import check_trainer_options

    check_trainer_options(cfg)
    name, run_dir, ckpt = resolve_run(cfg, config_name)
    if ckpt is not None:  # the checkpoint's own config, with only the changes a resume allows
        from ..config import config_from_yaml
        from .guards import read_checkpoint
        from .resume import resume_config

        saved = config_from_yaml(read_checkpoint(ckpt)["sgm_config"])
        cfg = resume_config(saved, cfg, resume_overrides)
    check_paths(cfg, run_dir)
    check_accelerator(cfg.trainer.get("accelerator", "auto"), "trainer.accelerator")
    with _published_run_name(name):
        return _fit(cfg, config_name, name, run_dir, ckpt, callbacks)


@contextmanager
def _published_run_name(name: str):
    """``RUN_NAME_ENV=name`` while the run lasts, so the DDP workers Lightning launches agree on
    the run folder; the previous value is restored afterwards (a later run in this process
    chooses its own name)."""
    before = os.environ.get(RUN_NAME_ENV)
    os.environ[RUN_NAME_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RUN_NAME_ENV, None)
        else:
            os.environ[RUN_NAME_ENV] = before


def _fit(cfg, config_name: str, name: str, run_dir: Path, ckpt: str | None, callbacks) -> TrainResult:
    import pytorch_lightning as pl

    from ..errors import RunFailed
    from ..images import NonFiniteImageError
    from ..paths import FolderLock, write_text_atomic
    from .allocator import keep_freed_memory
    from .data import SGMDataModule
    from .module import ScoreModule
    from .resume import resume_config_path

    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    if cfg.keep_freed_memory:
        keep_freed_memory()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = ScoreModule(cfg)  # builds the network: bad model.kwargs fail here, before any data
    datamodule = SGMDataModule(cfg.data, seed=cfg.seed)
    datamodule.setup("fit")  # reads the data now: a bad file or too few items fail before any output
    all_callbacks = build_callbacks(cfg, run_dir) + list(callbacks or [])
    config_path = resume_config_path(run_dir) if ckpt else run_dir / "config.yaml"
    resume_index = int(config_path.stem.rsplit("-", 1)[1]) if ckpt else 0
    quiet_lightning()
    trainer = build_trainer(cfg, all_callbacks, build_logger(cfg, name, config_name, resume_index))
    check_batches(datamodule, cfg, trainer.world_size)
    with ExitStack() as held:
        if trainer.is_global_zero:  # one writer per run folder
            held.enter_context(FolderLock(run_dir, "name"))
            for stale in run_dir.glob(".*.tmp"):  # left by a run killed while writing a checkpoint
                stale.unlink(missing_ok=True)
            write_text_atomic(config_path, to_yaml(cfg))
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)  # never unpickle code
            grid = finish(trainer, cfg, run_dir, name)
        except NonFiniteImageError as err:  # a sample grid of NaN: a broken run, whoever drew it
            raise RunFailed(f"error: at step {trainer.global_step} the sampled images are broken ({err}); "
                            f"the newest finite state is {run_dir / 'last.ckpt'} (if saved); check the model "
                            "(optim.lr) and the sample.* settings") from None
    return TrainResult(module, trainer, run_dir, grid)


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_DROP_TIP = _DropTip()


def quiet_lightning() -> None:
    """Silence what Lightning prints that is not about this run: the litlogger advertisement, the
    "Checkpoint directory exists and is not empty" warning (the run folder holds config.yaml, and
    resuming, the run's checkpoints, on purpose) and a deprecation inside Lightning's own code."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DROP_TIP)  # idempotent
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def finish(trainer, cfg, run_dir: Path, name: str) -> Path | None:
    """After ``fit``: report a Ctrl-C, draw the final grid (NaN samples fail the run), close wandb."""
    from ..errors import Interrupted
    from .guards import SaveLast

    save_last = next(c for c in trainer.callbacks if isinstance(c, SaveLast))
    if save_last.interrupted:
        raise Interrupted(f"interrupted (Ctrl-C) at step {trainer.global_step}; saved {run_dir / 'last.ckpt'}; "
                          f"continue with: sgm train resume=last name={name} (and the same --config)")
    grid = None
    # ddp_spawn / ddp_fork: the trained EMA lives in the worker processes, not in this one
    spawned = getattr(trainer.strategy, "_start_method", "popen") != "popen"
    if cfg.sample.at_end and trainer.is_global_zero and not spawned:
        grid = save_final_grid(trainer, cfg, run_dir / "samples.png")  # NaN samples: NonFiniteImageError
    if cfg.logging.logger == "wandb" and trainer.is_global_zero:
        import wandb

        wandb.finish()  # close the run; the next run in this process starts fresh
        wandb.teardown()  # wait for wandb-core to flush the run files
    return grid


def save_final_grid(trainer, cfg, path: Path) -> Path | None:
    """The end-of-training samples of the :class:`~sgm_lightning.training.callbacks.SamplingCallback`
    (EMA weights, ``sample.*`` settings) as one PNG: an image grid, or a scatter plot of points."""
    from ..images import make_grid, save_png, to_uint8
    from .callbacks import SamplingCallback

    cb = next((c for c in trainer.callbacks if isinstance(c, SamplingCallback)), None)
    if cb is None or cb.samples is None:
        return None
    if cb.samples.ndim == 4:
        return save_png(path, make_grid(to_uint8(cb.samples, cfg.data.centered)))
    return _scatter_png(cb.samples, path, reference=_training_points(trainer))


def _training_points(trainer):
    """The training split of a point dataset, ``(n, d)``, or None when the datamodule has none."""
    ds = getattr(getattr(trainer, "datamodule", None), "train_set", None)
    if ds is None or len(ds) == 0:
        return None
    import torch

    return torch.stack([torch.as_tensor(ds[i]) for i in range(len(ds))]).reshape(len(ds), -1)


REFERENCE_RGB = (0.75, 0.75, 0.75)  # the training data under the samples, light grey


def _scatter_png(x, path: Path, reference=None) -> Path:
    """Samples ``x`` ``(n, d)`` as a scatter of their first two coordinates (d = 1: on a line), over
    the training data ``reference`` in light grey, so a missing or extra mode shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xy(p):
        p = p.detach().cpu().double()
        return p[:, 0].numpy(), (p[:, 1] if p.shape[1] > 1 else 0 * p[:, 0]).numpy()

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        ax.scatter(*xy(reference), s=2, color=REFERENCE_RGB, label=f"data ({len(reference)})", zorder=1)
    ax.scatter(*xy(x), s=2, color="C0", label=f"samples ({len(x)})", zorder=2)
    if reference is not None:
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    ax.set_aspect("equal")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
