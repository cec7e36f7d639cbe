"""An ``sgm sample`` output folder, and the Lightning predict module that fills it.

Layout: ``DIR/png/NNNNNN.png`` (one per sample index), ``DIR/grid.png``, ``DIR/samples.npz``
and ``DIR/sample_config.yaml``. A PNG counts as written only when it is a non-empty file (files
are written atomically; an empty one is left by something else and is drawn again).
:func:`prepare_out_dir` refuses a folder holding samples of other settings, :class:`IndexSampler`
(run by :func:`predict_samples`) draws and writes the pending indices on every rank, and
:func:`assemble` reads them back into ``samples.npz`` and ``grid.png``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

from ..images import save_png, to_uint8
from ..paths import atomic_file, write_text_atomic
from ..sampling.draw import draw_samples
from .allocator import keep_freed_memory

PNG_DIR, GRID, NPZ, SETTINGS = "png", "grid.png", "samples.npz", "sample_config.yaml"
#: settings that do not change any image (free to differ between runs into one DIR)
FREE_KEYS = ("n", "batch_size", "devices", "num_nodes", "checkpoint_path")


def png_path(out: Path, k: int) -> Path:
    return Path(out) / PNG_DIR / f"{k:06d}.png"


def pending_indices(out: Path, n: int) -> list[int]:
    """Indices in [0, n) whose PNG is not written yet (resume); an empty file counts as not written."""
    return [k for k in range(n) if not _nonempty(png_path(out, k))]


def _nonempty(p: Path) -> bool:
    try:
        return p.stat().st_size > 0
    except OSError:
        return False


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


def _identity(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in FREE_KEYS}


def _upgrade(old: dict, new: dict) -> dict:
    """A folder written before samples were identified by their weights (``checkpoint_sha256`` of
    the file, always 32-bit) reads as the same model when that file digest is the file given now."""
    if "checkpoint_sha256" not in old or "weights_sha256" not in new:
        return old
    path = new.get("checkpoint_path")
    if path is None or not Path(path).exists() or file_digest(path) != old["checkpoint_sha256"]:
        return old
    up = {k: v for k, v in old.items() if k != "checkpoint_sha256"}
    return {**up, "weights_sha256": new["weights_sha256"], "precision": up.get("precision", "32")}


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
        old = _upgrade(old, settings)
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
    write_text_atomic(cfg_path, yaml.safe_dump(settings, sort_keys=False))


def assemble(out: Path, n: int) -> np.ndarray:
    """Read PNGs 0..n-1 into ``x`` (uint8 N x H x W x C), write samples.npz and grid.png atomically."""
    from ..images import make_grid, read_png

    arrays = []
    for k in range(n):
        p = png_path(out, k)
        try:
            a = read_png(p)
        except (OSError, SyntaxError, ValueError) as err:  # truncated or not a PNG: not a finished sample
            p.unlink(missing_ok=True)
            raise ValueError(f"{p}: not a complete PNG ({err}); removed it, run the same command again "
                             "to draw it") from None
        if arrays and a.shape != arrays[0].shape:
            raise ValueError(f"{p}: image of shape {a.shape}, but {png_path(out, 0).name} has {arrays[0].shape}; "
                             "the folder mixes samples of different models")
        arrays.append(a)
    x = np.stack(arrays)
    with atomic_file(out / NPZ, "wb") as f:
        np.savez(f, x=x)
    save_png(out / GRID, make_grid(torch.from_numpy(x[: min(n, 64)])).numpy())
    return x


# --- drawing: Trainer.predict over sample indices ----------------------------------------------
class IndexSampler(pl.LightningModule):
    """``predict`` = draw this rank's share of the pending sample indices and write each as
    ``out/png/NNNNNN.png`` (atomically). Used by ``sgm sample``; ``settings`` as it resolves them.

    On CPU with ``exact`` the intra-op thread count is pinned to 1: CPU kernels split their
    reductions by thread, so the bits would otherwise depend on how many processes share the
    cores (Lightning gives each DDP process cores // processes threads). Use ``--devices`` for
    CPU parallelism.
    """

    def __init__(self, model, settings: dict, out: Path, *, condition=None, progress=None):
        super().__init__()
        self.net, self.model, self.settings, self.out = model.net, model, settings, Path(out)
        self.condition, self.progress_cls, self.bar = condition, progress, None
        self.pending: list[int] = []

    def setup(self, stage: str) -> None:
        # rank 0 lists the pending indices and broadcasts them, so no rank can see another
        # rank's fresh files and disagree about the split
        mine = pending_indices(self.out, self.settings["n"]) if self.trainer.is_global_zero else None
        self.pending = self.trainer.strategy.broadcast(mine, src=0)

    def predict_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        share = torch.tensor(self.pending[rank::world], dtype=torch.long)
        return torch.utils.data.DataLoader(share, batch_size=self.settings["batch_size"], shuffle=False)

    def on_predict_start(self) -> None:
        keep_freed_memory()  # every sampler step frees and re-allocates the network's activations
        if self.settings["exact"] and self.device.type == "cpu":
            torch.set_num_threads(1)
        self.net.eval()
        if self.progress_cls is not None and self.trainer.is_global_zero:
            self.bar = self.progress_cls(len(self.pending), self.trainer.world_size)

    def predict_step(self, batch, batch_idx):
        s, idx = self.settings, batch.tolist()
        x, nfe = draw_samples(self.model.score_fn(), self.model.sde, tuple(s["shape"]), idx, seed=s["seed"],
                              sampler=s["sampler"], options=s["options"], exact=s["exact"],
                              device=self.device, condition=self.condition)
        for k, img in zip(idx, to_uint8(x, s["centered"])):
            save_png(png_path(self.out, k), img)
        if self.bar is not None:
            self.bar.advance(len(idx), nfe)
        return None

    def on_predict_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.trainer.strategy.barrier("sgm-sample-written")  # rank 0 assembles after this


def predict_samples(model, settings: dict, out: Path, *, condition=None, accelerator="auto", strategy="ddp",
                    progress=None):
    """Draw and write every pending index of ``out`` with Lightning on ``settings['devices']`` x
    ``settings['num_nodes']`` processes; returns when all ranks have written their share.
    ``progress``: a progress-bar class ``(total, world)`` with ``advance(count, nfe)`` and ``close()``."""
    import warnings

    warnings.filterwarnings("ignore", message="predict returned None")  # on purpose: each rank writes PNGs
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    world = settings["devices"] * settings["num_nodes"]
    try:
        trainer = pl.Trainer(
            accelerator=accelerator, devices=settings["devices"], num_nodes=settings["num_nodes"],
            strategy=strategy if world > 1 else "auto", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
            precision={"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}[settings.get("precision", "32")],
        )
    except (MisconfigurationException, RuntimeError) as err:  # e.g. --devices 4 on a 2-GPU machine
        raise ValueError(f"--devices/--accelerator/--precision: {' '.join(str(err).split())}") from None
    writer = IndexSampler(model, settings, out, condition=condition,
                          progress=progress)
    trainer.predict(writer, return_predictions=False)
