"""Lightning callbacks that sample during training: the sample grid and FID/KID.

Every rank draws its share of the sample indices (index k goes to rank k mod world size) with
per-sample generators ``rng.sample_generators(seed, [k])``, so the gathered result depends only
on the seed and the index, never on the world size; ranks with fewer (or no) indices still
take part in every collective, so no rank waits forever.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from ..images import make_grid, save_png, to_uint8
from ..sampling import draw_samples, sampler_settings
from ..sde import bcast

def _eval_mode(net: torch.nn.Module):
    class _Ctx:
        def __enter__(self):
            self.was = net.training
            net.eval()

        def __exit__(self, *exc):
            net.train(self.was)

    return _Ctx()


def gather_by_index(pl_module: pl.LightningModule, indices: list[int], x: torch.Tensor, n: int) -> torch.Tensor | None:
    """All ranks' ``(indices, x)`` -> ``x`` for indices 0..n-1 in order, on global rank 0 (None
    elsewhere). Shares are padded to ceil(n / world) so every rank sends the same shape."""
    world = pl_module.trainer.world_size
    if world == 1:
        order = torch.tensor(indices).argsort()
        return x[order]
    per = math.ceil(n / world)
    idx = torch.full((per,), -1, dtype=torch.long, device=pl_module.device)
    buf = torch.zeros((per, *x.shape[1:]), dtype=x.dtype, device=pl_module.device)
    idx[: len(indices)] = torch.tensor(indices, dtype=torch.long)
    buf[: len(indices)] = x.to(pl_module.device)
    all_idx = pl_module.all_gather(idx).reshape(-1)
    all_x = pl_module.all_gather(buf).reshape(-1, *x.shape[1:])
    if not pl_module.trainer.is_global_zero:
        return None
    keep = all_idx >= 0
    all_idx, all_x = all_idx[keep], all_x[keep]
    if sorted(all_idx.tolist()) != list(range(n)):
        raise RuntimeError(f"gather: expected indices 0..{n - 1} once each, got {sorted(all_idx.tolist())}")
    return all_x[all_idx.argsort()]


# --- scheduling shared by the sampling and FID callbacks ---------------------------------------
class _EveryNStepsCallback(pl.Callback):
    """Calls ``run(trainer, pl_module)`` every ``self.every`` optimiser steps (0 = never) and at
    the end of training when ``self.at_end``. Subclasses set ``every`` and ``at_end``.

    Lightning calls callbacks' on_train_batch_end before the module's, where the EMA is
    updated; so a due run happens at the start of the next batch (or at the end of training),
    when the EMA includes step N.
    """

    every: int = 0
    at_end: bool = False
    _last_step: int = -1
    _due: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step > 0 and step % self.every == 0 and step != self._last_step:
            self._due = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._due is not None:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if (self.at_end or self._due is not None) and trainer.global_step != self._last_step:
            self.run(trainer, pl_module)

    def run(self, trainer, pl_module):
        raise NotImplementedError


# --- the sample grid callback ----------------------------------------------------------------
def denoised_frames(score_fn, sde, frames: list, n: int) -> list[torch.Tensor]:
    """``n`` evenly spaced ``(t, x)`` frames of one trajectory as denoised estimates
    D(x_t) = E[x_0 | x_t] = (x + std^2 score) / s (Tweedie; one NFE each), on the CPU.

    The state x_t itself is noise until the last steps (for VE it has std sigma(t) >> 1); its
    denoised estimate shows what the network believes the image is at every level. Frames at
    t = 0 or with no time (plain Langevin) are already clean and are shown as they are.
    """
    picks = torch.linspace(0, len(frames) - 1, min(n, len(frames))).round().long().tolist()
    out = []
    for i in picks:
        t, x = frames[i]
        if torch.isfinite(t).all() and (t > 0).all():
            t = t.to(device=x.device, dtype=x.dtype)
            scale, std = sde.marginal_coeffs(t)
            x = (x + bcast(std**2, x) * score_fn(x, t)) / bcast(scale, x)
        out.append(x.cpu())
    return out



class SamplingCallback(_EveryNStepsCallback):
    """Every ``every_n_steps`` optimiser steps (0 = never) and at the end of training, draw
    ``n_samples`` with the EMA weights on every rank and log, from rank 0, the grid
    (``sample/grid``), a strip of the denoised estimate D(x_t) along one trajectory
    (``sample/trajectory``, see :func:`denoised_frames`),
    the NFE and the wall time. Grids are also written to ``out_dir/step_XXXXXXX.png``.

    ``samples`` holds the last gathered float samples on rank 0 (for tests and other callbacks).

    The end-of-training draw costs at most what training cost: it makes
    ``min(n_samples, max(END_FLOOR, 3 * steps * batch / nfe))`` samples (a training step is about
    three network passes per example: forward and backward), so a 30-step smoke test of a toy
    model does not spend minutes drawing 2,000 points with a 1,000-NFE sampler. Sample k is the
    same whichever count is drawn; ``sgm sample`` draws any number.
    """

    END_FLOOR = 64

    def __init__(self, *, sampler: str, options: dict, n_samples: int = 64, every_n_steps: int = 0,
                 at_end: bool = True, seed: int = 0, batch_size: int = 64, trajectory_frames: int = 10,
                 exact: bool = False, out_dir: str | Path | None = None):
        if n_samples < 1 or batch_size < 1 or every_n_steps < 0 or trajectory_frames < 0:
            raise ValueError("sample.n_samples/batch_size must be >= 1, every_n_steps/trajectory_frames >= 0")
        self.sampler, self.options, self.n, self.every = sampler, dict(options), n_samples, every_n_steps
        self.at_end, self.seed, self.batch_size, self.frames = at_end, seed, batch_size, trajectory_frames
        self.exact, self.out_dir = exact, (Path(out_dir) if out_dir is not None else None)
        self.samples: torch.Tensor | None = None
        self.nfe: int | None = None

    @classmethod
    def from_config(cls, cfg, out_dir=None) -> SamplingCallback:
        s = cfg.sample
        # per-sample Langevin norms: the grid does not depend on batches or the world size
        name, options = sampler_settings(s, per_sample=True)
        return cls(sampler=name, options=options, n_samples=s.n_samples, every_n_steps=s.every_n_steps,
                   at_end=s.at_end, seed=s.seed, batch_size=s.batch_size,
                   trajectory_frames=s.trajectory_frames if s.trajectory else 0, out_dir=out_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        self._ending = True
        try:
            super().on_train_end(trainer, pl_module)
        finally:
            self._ending = False

    def end_count(self, trainer, pl_module, score_fn) -> int:
        """How many samples the end-of-training draw makes (see the class docstring)."""
        batch = getattr(getattr(getattr(pl_module, "cfg", None), "data", None), "batch_size", None)
        if self.n <= self.END_FLOOR or batch is None:
            return self.n
        _, nfe = draw_samples(score_fn, pl_module.sde, tuple(pl_module.shape), [0], seed=self.seed,
                              sampler=self.sampler, options=self.options, exact=self.exact, device=pl_module.device)
        budget = 3 * max(trainer.global_step, 1) * int(batch) * trainer.world_size
        n = min(self.n, max(self.END_FLOOR, budget // max(nfe, 1)))
        if n < self.n:
            rank_zero_info(f"end-of-run samples: {n} of sample.n_samples={self.n} ({nfe} NFE each would cost more "
                           f"than the {trainer.global_step} training steps; sgm sample draws any number)")
        return n

    @torch.no_grad()
    def run(self, trainer, pl_module) -> torch.Tensor | None:
        """Sample on every rank, gather on rank 0, log. Returns the samples on rank 0."""
        self._last_step, self._due = trainer.global_step, None
        rank, world = trainer.global_rank, trainer.world_size
        n = self.n
        if getattr(self, "_ending", False):
            with pl_module.ema_scope(), _eval_mode(pl_module.net):
                n = self.end_count(trainer, pl_module, pl_module.score_fn())
        mine = list(range(rank, n, world))
        frames: list[torch.Tensor] = []

        def keep_first(step):
            frames.append((step.t[:1].detach().cpu().double(), step.x[:1].detach()))

        start = time.perf_counter()
        xs, nfe = [], 0
        with pl_module.ema_scope(), _eval_mode(pl_module.net):
            score_fn = pl_module.score_fn()
            for b in range(0, len(mine), self.batch_size):
                chunk = mine[b : b + self.batch_size]
                cb = keep_first if (b == 0 and rank == 0 and self.frames) else None
                x, nfe = draw_samples(score_fn, pl_module.sde, tuple(pl_module.shape), chunk, seed=self.seed,
                                      sampler=self.sampler, options=self.options, exact=self.exact,
                                      device=pl_module.device, callback=cb)
                xs.append(x)
            seconds = time.perf_counter() - start
            if frames:
                frames = denoised_frames(score_fn, pl_module.sde, frames, self.frames)
        shape = tuple(pl_module.shape)
        x = torch.cat(xs) if xs else torch.zeros((0, *shape), device=pl_module.device)
        gathered = gather_by_index(pl_module, mine, x, n)
        if gathered is None:
            return None
        self.samples, self.nfe = gathered.cpu(), nfe
        self._log(trainer, pl_module, frames, nfe, seconds)
        return self.samples

    def _log(self, trainer, pl_module, frames, nfe, seconds) -> None:
        step = trainer.global_step
        metrics = {"sample/nfe": float(nfe), "sample/seconds": seconds}
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=step)
        if len(pl_module.shape) != 3:  # point clouds: no images
            return
        centered = bool(pl_module.cfg.data.centered) if hasattr(pl_module, "cfg") else True
        grid = make_grid(to_uint8(self.samples, centered))
        images = {"sample/grid": grid}
        if frames:
            strip = torch.cat(frames + [self.samples[:1]])
            images["sample/trajectory"] = make_grid(to_uint8(strip, centered), nrow=len(strip))
        for key, img in images.items():
            log_image(trainer, key, img, step)
        if self.out_dir is not None:
            save_png(self.out_dir / f"step_{step:07d}.png", grid)
            if "sample/trajectory" in images:
                save_png(self.out_dir / f"trajectory_{step:07d}.png", images["sample/trajectory"])



# --- FID / KID during training -----------------------------------------------------------------
class FIDCallback(_EveryNStepsCallback):
    """Every ``every_n_steps`` (and at the end when ``at_end``): every rank draws its share of
    ``n_samples`` with the EMA weights, feeds their features to :class:`ImageMetrics` (torchmetrics
    sums/concatenates them across ranks), and rank 0 logs ``eval/fid_n<N>`` (and KID, IS).

    ``features``: a feature network (see :mod:`sgm_lightning.metrics.images`); ``reference``: the
    real statistics (``{mu, sigma, n[, features]}``, see ``load_reference_stats``).
    ``last`` holds the last scores (every rank).
    """

    def __init__(self, *, features, reference: dict, sampler: str, options: dict, n_samples: int = 1000,
                 every_n_steps: int = 0, at_end: bool = False, seed: int = 0, batch_size: int = 250,
                 kid_subset_size: int = 100, exact: bool = False):
        if n_samples < 2 or batch_size < 1 or every_n_steps < 0:
            raise ValueError("eval.n_samples must be >= 2, eval.batch_size >= 1, eval.every_n_steps >= 0")
        self.features, self.reference = features, reference
        self.sampler, self.options, self.n = sampler, dict(options), n_samples
        self.every, self.at_end = every_n_steps, at_end
        self.seed, self.batch_size, self.kid_subset_size, self.exact = seed, batch_size, kid_subset_size, exact
        self.metrics = None
        self.last: dict[str, float] | None = None

    @classmethod
    def from_config(cls, cfg) -> FIDCallback:
        from ..metrics.images import load_inception, load_reference_stats

        ev = cfg.eval
        if ev.reference_stats is None:
            raise ValueError("eval.reference_stats: FID during training needs reference statistics; "
                             "build them with `sgm fid --ref-config ... --save-ref stats.npz`")
        name, options = sampler_settings(cfg.sample, per_sample=True)
        return cls(features=load_inception(ev.inception_weights), reference=load_reference_stats(ev.reference_stats),
                   sampler=name, options=options, n_samples=ev.n_samples, every_n_steps=ev.every_n_steps,
                   seed=cfg.sample.seed, batch_size=ev.batch_size, kid_subset_size=ev.kid_subset_size)

    def setup(self, trainer, pl_module, stage: str) -> None:
        from ..metrics.images import ImageMetrics

        if len(pl_module.shape) != 3:
            raise ValueError("eval.every_n_steps: FID needs an image dataset")
        self.metrics = ImageMetrics(self.features, image_shape=tuple(pl_module.shape),
                                    kid_subset_size=self.kid_subset_size).to(pl_module.device)
        self.metrics.load_reference(self.reference)

    @torch.no_grad()
    def run(self, trainer, pl_module) -> dict[str, float]:
        self._last_step, self._due = trainer.global_step, None
        rank, world = trainer.global_rank, trainer.world_size
        mine = list(range(rank, self.n, world))
        centered = bool(pl_module.cfg.data.centered) if hasattr(pl_module, "cfg") else True
        self.metrics.reset_fake()
        start = time.perf_counter()
        with pl_module.ema_scope(), _eval_mode(pl_module.net):
            score_fn = pl_module.score_fn()
            for b in range(0, len(mine), self.batch_size):
                chunk = mine[b : b + self.batch_size]
                x, _ = draw_samples(score_fn, pl_module.sde, tuple(pl_module.shape), chunk, seed=self.seed,
                                    sampler=self.sampler, options=self.options, exact=self.exact,
                                    device=pl_module.device)
                self.metrics.update_fake(to_uint8(x, centered).permute(0, 3, 1, 2).to(pl_module.device))
        self.last = self.metrics.compute()  # a collective: every rank calls it
        if trainer.is_global_zero and trainer.logger is not None:
            logged = {f"eval/{k}": v for k, v in self.last.items()}
            logged["eval/seconds"] = time.perf_counter() - start
            trainer.logger.log_metrics(logged, step=trainer.global_step)
        return self.last


def log_image(trainer, key: str, image: torch.Tensor, step: int) -> None:
    """Send a uint8 ``(H, W, C)`` image to whatever logger the run has (wandb, TensorBoard)."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # wandb
            logger.log_image(key=key, images=[image.numpy()], step=step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # tensorboard
            logger.experiment.add_image(key, image.numpy(), step, dataformats="HWC")
