"""``sgm sample``: draw N images from a checkpoint on any number of devices, reproducibly.

    sgm sample --ckpt PATH --n N --out DIR [--sampler NAME --steps K --snr R --seed S
               --batch-size B --devices D --num-nodes M --overwrite
               --inpaint IMAGE --mask MASK | --colorize IMAGE]

Writes ``DIR/png/NNNNNN.png`` (one per sample index), ``DIR/grid.png``, ``DIR/samples.npz``
(``x``: uint8 N x H x W x C in index order) and ``DIR/sample_config.yaml`` (the resolved
settings). Image k depends only on (checkpoint, sampler settings, seed, k):

* its noise comes from its own generator, ``rng.sample_generators(seed, [k])``;
* the Langevin corrector uses per-sample norms (``norms="sample"``): score_sde's batch-averaged
  norms would couple every sample to the others in its batch;
* with ``--exact`` (the default) every sample runs through the sampler alone, so floating-point
  kernels see the same shapes whatever the batch size or device count (CPU and GPU kernels
  pick different reduction orders for different batch sizes); ``--no-exact`` batches samples,
  which is much faster on GPUs and agrees to float rounding.

Runs through Lightning (``Trainer.predict`` over the sample indices; each rank draws and
writes its own indices, no gathering). Rerunning into the same DIR skips indices already
written; files are written atomically, so a killed run loses nothing that was written and
leaves no half-written file. A DIR holding samples made with other settings is refused unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import yaml

from ..rng import SEED_LIMIT
from ..sample_dir import GRID, NPZ, PNG_DIR, SETTINGS, pending_indices, png_path  # noqa: F401 (callbacks use them)

MAX_NPZ_BYTES = 32 * 2**30  # samples.npz is built in memory by rank 0
#: settings that do not change any image (free to differ between runs into one DIR)
FREE_KEYS = ("n", "batch_size", "devices", "num_nodes", "checkpoint_path")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw samples from a checkpoint (multi-device, resumable)",
        description="Draw N samples from a checkpoint on any number of devices into DIR (png/, grid.png, "
        "samples.npz, sample_config.yaml). Image k depends only on (checkpoint, sampler settings, seed, k); "
        "rerunning into DIR resumes.",
    )
    p.add_argument("--ckpt", required=True, help="a .ckpt, an export folder / model.safetensors, "
                   "or an official score_sde_pytorch checkpoint (.pth, with --config)")
    p.add_argument("--config", default=None, help="score_sde config (.json/.yaml) for an official checkpoint")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sampler", default=None, help="sampler name (default: the checkpoint's sample.sampler)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--snr", type=float, default=None, help="Langevin corrector signal-to-noise ratio")
    p.add_argument("--seed", type=int, default=0, help="image k depends only on (seed, k)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per step on each device")
    p.add_argument("--devices", type=int, default=1, help="devices per node (processes on CPU)")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--accelerator", default="auto", help="auto | cpu | gpu")
    p.add_argument("--strategy", default="ddp", choices=("ddp", "ddp_fork", "ddp_spawn"),
                   help="how Lightning starts the processes when devices x nodes > 1 (default ddp)")
    p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True,
                   help="bitwise batch-independent images (default); --no-exact batches samples")
    p.add_argument("--overwrite", action="store_true", help="replace samples made with other settings")
    p.add_argument("--inpaint", default=None, help="known image(s) (.png or .npz) for inpainting")
    p.add_argument("--mask", default=None, help="mask .png for --inpaint: white = known pixel")
    p.add_argument("--colorize", default=None, help="grey image(s) (.png or .npz) to colourise")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# --- settings --------------------------------------------------------------------------------
def _check_args(args: argparse.Namespace) -> None:
    if args.n <= 0:
        raise ValueError(f"--n: the number of samples must be >= 1, got {args.n}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.devices <= 0 or args.num_nodes <= 0:
        raise ValueError(f"--devices/--num-nodes: must be >= 1, got {args.devices}/{args.num_nodes}")
    if args.steps is not None and args.steps <= 0:
        raise ValueError(f"--steps: must be >= 1, got {args.steps}")
    if args.snr is not None and args.snr <= 0:
        raise ValueError(f"--snr: must be > 0, got {args.snr}")
    if args.inpaint and args.colorize:
        raise ValueError("--inpaint/--colorize: choose one")
    if bool(args.inpaint) != bool(args.mask):
        raise ValueError("--inpaint needs --mask (and --mask needs --inpaint)")
    if not 0 <= args.seed < SEED_LIMIT:
        raise ValueError(f"--seed: must be in [0, 2**63), got {args.seed}")
    from ..config import check_accelerator
    from ..paths import check_output_dir

    check_accelerator(args.accelerator, "--accelerator")
    check_output_dir(args.out, "--out")


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, or of every file in a folder (sorted by name)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def resolve_settings(args: argparse.Namespace, model) -> dict:
    """Everything that determines the images, plus the free keys (see ``FREE_KEYS``)."""
    from ..callbacks import sampler_settings

    name, options = sampler_settings(
        model.cfg.sample, sampler=args.sampler, steps=args.steps, snr=args.snr, per_sample=True
    )
    cond = None
    if args.inpaint or args.colorize:
        cond = {"mode": "inpaint" if args.inpaint else "colorize",
                "image_sha256": file_digest(args.inpaint or args.colorize),
                "mask_sha256": file_digest(args.mask) if args.mask else None}
    return {
        "checkpoint_sha256": file_digest(args.ckpt),
        "sampler": name,
        "options": options,
        "seed": int(args.seed),
        "exact": bool(args.exact),
        "shape": list(model.shape),
        "centered": bool(model.centered),
        "condition": cond,
        "n": int(args.n), "batch_size": int(args.batch_size), "devices": int(args.devices),
        "num_nodes": int(args.num_nodes), "checkpoint_path": str(args.ckpt),
    }


def _identity(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in FREE_KEYS}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prepare_out_dir(out: Path, settings: dict, overwrite: bool) -> None:
    """Create DIR; refuse (before touching anything) samples made with other settings.

    With ``overwrite``, samples of other settings are deleted; samples of the same settings
    are always kept (that is the resume). A ``samples.npz`` or ``grid.png`` this command did not
    write (no settings file) is never replaced without ``overwrite``. A settings file with no
    samples next to it (a run that stopped before drawing any) blocks nothing.
    """
    cfg_path, png = out / SETTINGS, out / PNG_DIR
    have_pngs = png.is_dir() and any(png.glob("*.png"))
    outputs = [f.name for f in (out / GRID, out / NPZ) if f.exists()]
    same = False
    if cfg_path.is_file():
        try:
            old = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError:
            old = {"unreadable": True}
        if not isinstance(old, dict):
            old = {"unreadable": True}
        diff = sorted(k for k in set(_identity(old)) | set(_identity(settings)) if old.get(k) != settings.get(k))
        same = not diff
        if diff and not overwrite and (have_pngs or outputs):
            raise ValueError(
                f"--out: {out} holds samples made with other settings (differing: {', '.join(diff)}); "
                "choose another folder or pass --overwrite to replace them"
            )
    elif have_pngs and not overwrite:
        raise ValueError(f"--out: {out / PNG_DIR} holds PNGs of unknown settings; pass --overwrite to replace them")
    elif outputs and not overwrite:
        raise ValueError(f"--out: {out} already holds {' and '.join(outputs)} not written by sgm sample "
                         "(no sample_config.yaml); choose another folder or pass --overwrite to replace them")
    if not same:
        for f in list(png.glob("*.png")) + [out / GRID, out / NPZ]:
            if f.is_file():
                f.unlink()
    png.mkdir(parents=True, exist_ok=True)
    for f in png.glob(".*.tmp"):  # left by a killed run (never a finished sample)
        f.unlink(missing_ok=True)
    _atomic_write_bytes(cfg_path, yaml.safe_dump(settings, sort_keys=False).encode())


def assemble(out: Path, n: int) -> np.ndarray:
    """Read PNGs 0..n-1 into ``x`` (uint8 N x H x W x C), write samples.npz and grid.png atomically."""
    from PIL import Image
    import torch

    from ..images import make_grid, save_png

    arrays = []
    for k in range(n):
        p = png_path(out, k)
        try:
            with Image.open(p) as img:
                a = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as err:  # truncated or not a PNG: not a finished sample
            p.unlink(missing_ok=True)
            raise ValueError(f"{p}: not a complete PNG ({err}); removed it, run the same command again "
                             "to draw it") from None
        a = a[:, :, None] if a.ndim == 2 else a
        if arrays and a.shape != arrays[0].shape:
            raise ValueError(f"{p}: image of shape {a.shape}, but {png_path(out, 0).name} has {arrays[0].shape}; "
                             "the folder mixes samples of different models")
        arrays.append(a)
    x = np.stack(arrays)
    tmp = out / f".{NPZ}.{os.getpid()}.tmp.npz"
    np.savez(tmp, x=x)
    os.replace(tmp, out / NPZ)
    save_png(out / GRID, make_grid(torch.from_numpy(x[: min(n, 64)])).numpy())
    return x


# --- the run ---------------------------------------------------------------------------------
def _is_global_zero() -> bool:
    """Rank 0 of the whole job, before Lightning has set anything up (torchrun / SLURM / ours)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def load_for_sampling(ckpt: str, config: str | None):
    """Our checkpoint/export, or an official score_sde checkpoint when ``config`` is given."""
    if config is not None:
        from ..official import load_official

        return load_official(ckpt, config)
    from ..checkpoint import load_model

    return load_model(ckpt)


def run(args: argparse.Namespace) -> int:
    from ..paths import FolderLock

    _check_args(args)
    model = load_for_sampling(args.ckpt, args.config)
    if not model.is_image:
        raise ValueError(f"--ckpt: {args.ckpt} is a point-cloud model (shape {tuple(model.shape)}); "
                         "sgm sample writes images")
    need = args.n * math.prod(model.shape)  # samples.npz is assembled in memory (uint8)
    if need > MAX_NPZ_BYTES:
        raise ValueError(f"--n: {args.n} samples of shape {tuple(model.shape)} need {need / 2**30:.0f} GiB in "
                         f"samples.npz (at most {MAX_NPZ_BYTES // 2**30} GiB); draw them in several --out folders")
    settings = resolve_settings(args, model)
    condition = None
    if settings["condition"] is not None:
        from ..controllable import load_condition

        condition = load_condition(settings["condition"]["mode"], args.inpaint or args.colorize, args.mask,
                                   tuple(model.shape), model.centered)
    out = Path(args.out)
    if not _is_global_zero():
        return _draw_and_assemble(args, model, settings, out, condition)
    with FolderLock(out, "--out"):
        prepare_out_dir(out, settings, args.overwrite)
        return _draw_and_assemble(args, model, settings, out, condition)


def _draw_and_assemble(args, model, settings: dict, out: Path, condition) -> int:
    todo = len(pending_indices(out, args.n))
    # several processes started together (torchrun / SLURM) must all enter predict: one of them
    # may look before rank 0 has cleaned DIR; rank 0's list is the one used (IndexSampler.setup)
    if todo or args.devices * args.num_nodes > 1:
        predict_samples(model, settings, out, condition=condition, accelerator=args.accelerator,
                        strategy=args.strategy, progress=not args.no_progress)
    if _is_global_zero():
        assemble(out, args.n)
        print(f"sgm sample: {args.n} samples in {out} ({todo} new)")
    return 0


def predict_samples(model, settings: dict, out: Path, *, condition=None, accelerator="auto", strategy="ddp",
                    progress=True):
    """Draw and write every pending index of ``out`` with Lightning on ``settings['devices']`` x
    ``settings['num_nodes']`` processes; returns when all ranks have written their share."""
    import warnings

    import pytorch_lightning as pl

    warnings.filterwarnings("ignore", message="predict returned None")  # on purpose: each rank writes PNGs
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    world = settings["devices"] * settings["num_nodes"]
    try:
        trainer = pl.Trainer(
            accelerator=accelerator, devices=settings["devices"], num_nodes=settings["num_nodes"],
            strategy=strategy if world > 1 else "auto", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        )
    except (MisconfigurationException, RuntimeError) as err:  # e.g. --devices 4 on a 2-GPU machine
        raise ValueError(f"--devices/--accelerator: {' '.join(str(err).split())}") from None
    from ..callbacks import IndexSampler

    writer = IndexSampler(model, settings, out, condition=condition,
                          progress=_Progress if progress else None)
    trainer.predict(writer, return_predictions=False)


class _Progress:
    """A rich progress bar on rank 0: samples done (rank 0's share x world size), NFE, ETA."""

    def __init__(self, total: int, world: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.world = world
        self.progress = Progress(
            TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("NFE/sample {task.fields[nfe]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("sampling", total=total, nfe=0)
        self.progress.start()

    def advance(self, count: int, nfe: int) -> None:
        self.progress.update(self.task, advance=count * self.world, nfe=nfe)

    def close(self) -> None:
        self.progress.update(self.task, completed=self.progress.tasks[0].total)
        self.progress.stop()
