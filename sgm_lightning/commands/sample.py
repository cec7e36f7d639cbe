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

Runs through Lightning (:mod:`sgm_lightning.training.sample_folder`: ``Trainer.predict`` over
the sample indices; each rank draws and writes its own indices, no gathering). Rerunning into
the same DIR skips indices already written; files are written atomically, so a killed run
loses nothing that was written and leaves no half-written file. A DIR holding samples made
with other settings is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..rng import SEED_LIMIT

MAX_NPZ_BYTES = 32 * 2**30  # samples.npz is built in memory by rank 0


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
    p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                   help="one sample per network call: bitwise batch-independent images (default on CPU); "
                        "--no-exact batches --batch-size samples per call (default on GPUs: many times faster)")
    p.add_argument("--precision", default="32", choices=("32", "bf16", "16"),
                   help="network arithmetic: 32 (default), bf16 or 16 autocast (GPUs); part of the settings")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network first (pays off for long runs, e.g. 50,000 samples on GPUs)")
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


def exact_default(accelerator: str) -> bool:
    """``--exact`` unless the samples run on GPUs, where batching is what a 50,000-sample FID run
    needs and images still agree to float rounding (see docs/sampling.md)."""
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return not gpu


def resolve_settings(args: argparse.Namespace, model) -> dict:
    """Everything that determines the images, plus the free keys (see ``FREE_KEYS``)."""
    from ..sampling import sampler_settings
    from ..training.sample_folder import file_digest

    name, options = sampler_settings(
        model.cfg.sample, sampler=args.sampler, steps=args.steps, snr=args.snr, per_sample=True
    )
    cond = None
    if args.inpaint or args.colorize:
        cond = {"mode": "inpaint" if args.inpaint else "colorize",
                "image_sha256": file_digest(args.inpaint or args.colorize),
                "mask_sha256": file_digest(args.mask) if args.mask else None}
    return {
        "weights_sha256": model.weights_sha256,  # the weights, not the file: a .ckpt and its export agree
        "sampler": name,
        "options": options,
        "seed": int(args.seed),
        "exact": exact_default(args.accelerator) if args.exact is None else bool(args.exact),
        "precision": str(args.precision),
        "shape": list(model.shape),
        "centered": bool(model.centered),
        "condition": cond,
        "n": int(args.n), "batch_size": int(args.batch_size), "devices": int(args.devices),
        "num_nodes": int(args.num_nodes), "checkpoint_path": str(args.ckpt),
    }


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
    from ..training.sample_folder import prepare_out_dir

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
    if args.compile:
        import torch

        model.net = torch.compile(model.net)
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
    from ..training.sample_folder import assemble, pending_indices, predict_samples

    todo = len(pending_indices(out, args.n))
    # several processes started together (torchrun / SLURM) must all enter predict: one of them
    # may look before rank 0 has cleaned DIR; rank 0's list is the one used (IndexSampler.setup)
    if todo or args.devices * args.num_nodes > 1:
        predict_samples(model, settings, out, condition=condition, accelerator=args.accelerator,
                        strategy=args.strategy, progress=None if args.no_progress else _Progress)
    if _is_global_zero():
        assemble(out, args.n)
        print(f"sgm sample: {args.n} samples in {out} ({todo} new)")
    return 0


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
