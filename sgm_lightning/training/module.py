"""The LightningModule: score network + forward SDE + DSM loss + optimiser + EMA.

* Training: continuous DSM (t ~ U(eps, T)) or discrete NCSN / DDPM levels (:mod:`sgm_lightning.losses`),
  with its noise drawn from a module-owned generator stored in checkpoints (exact resume).
* EMA (:mod:`sgm_lightning.ema`) after every optimiser step; validation runs on the EMA weights, as do
  sampling (:meth:`ScoreModule.ema_scope`) and export (:mod:`sgm_lightning.checkpoint`).
* Validation: the DSM loss with fixed noise per validation item (a pure function of the item's
  index), overall and in ``logging.val_buckets`` noise-level buckets (loss vs sigma).
* Checkpoints carry the resolved config (YAML text), the EMA shadow by parameter name and
  the RNG states, all plain tensors / strings so ``torch.load(weights_only=True)`` reads them.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..checkpoint import build_net, build_sde
from ..config import config_from_yaml, data_shape, to_yaml
from ..ema import EMA
from ..losses import discrete_coeffs, discrete_dsm_loss, dsm_loss
from ..nets.precond import precond_from_config
from ..nets.wrapper import score_fn_from_net
from ..rng import rand, randn, sample_generators, stream_seed

VAL_NOISE_SEED = 20_240_521  # validation noise depends only on (this, item index)


class ScoreModule(pl.LightningModule):
    """Trains ``net`` so that ``score_fn_from_net(net, sde)`` approximates grad log p_t."""

    def __init__(self, cfg, net: nn.Module | None = None):
        super().__init__()
        if not isinstance(cfg, DictConfig):  # load_from_checkpoint passes the saved plain dict back
            cfg = config_from_yaml(OmegaConf.to_yaml(OmegaConf.create(cfg)))
        self.cfg = cfg
        resolve_sigma_data(cfg)
        # a plain dict (sigma_data resolved): TensorBoard's hparams.yaml, wandb's config and
        # ScoreModule.load_from_checkpoint(path) all read it
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        self.sde = build_sde(cfg.sde)
        self.shape = data_shape(cfg.data)
        self.net = net if net is not None else build_net(cfg.model, self.shape, cfg.sde, cfg.data.centered)
        self.continuous = bool(cfg.loss.continuous)
        # model.compile: the loss calls a torch.compile'd view of the same parameters; kept out of
        # the module's children so that state_dict keys, checkpoints and the EMA are unchanged
        compiled = torch.compile(self.net, mode=cfg.model.compile_mode) if cfg.model.get("compile") else self.net
        object.__setattr__(self, "_loss_net", compiled)
        e = cfg.ema
        self.ema = None
        if e.enabled:
            self.ema = EMA(self.net.parameters(), decay=e.decay, warmup=e.warmup, inv_gamma=e.inv_gamma,
                           power=e.power, halflife_steps=e.halflife_steps, ramp=e.ramp)
        self._noise: torch.Generator | None = None
        self._noise_state: torch.Tensor | None = None
        self._last_ema_step = 0
        self._t_last: float | None = None
        self._val_sums: torch.Tensor | None = None

    # --- scores ---------------------------------------------------------------------------
    def score_fn(self, net: nn.Module | None = None):
        """``score_fn(x, t)`` of the live weights (wrap in :meth:`ema_scope` for the EMA ones)."""
        return score_fn_from_net(self.net if net is None else net, self.sde, continuous=self.continuous,
                                 precond=precond_from_config(self.cfg.model))

    def _sigma_data(self) -> float:
        return float(self.cfg.model.sigma_data)

    @contextmanager
    def ema_scope(self):
        """Inside the block the network holds the EMA weights (no-op without EMA)."""
        ctx = self.ema.averaged(self.net.parameters()) if self.ema is not None else nullcontext()
        with ctx:
            yield

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(x, labels)

    # --- loss -----------------------------------------------------------------------------
    def loss_terms(self, x0: torch.Tensor, generator=None, *, u: torch.Tensor | None = None, z=None):
        """Per-sample DSM losses ``(B,)`` and their position in [0, 1) along the noise axis.

        ``u`` (B,) in [0, 1) fixes t = eps + u (T - eps) (continuous) or the level floor(u N).
        """
        lo, fn = self.cfg.loss, self.score_fn(self._loss_net)
        if self.continuous:
            t = None if u is None else lo.eps + u * (self.sde.T - lo.eps)
            losses, t = dsm_loss(fn, self.sde, x0, t=t, z=z, eps=lo.eps, weighting=lo.weighting,
                                 reduce=lo.reduce, generator=generator, sigma_dist=lo.sigma_dist,
                                 P_mean=lo.P_mean, P_std=lo.P_std, sigma_data=self._sigma_data())
            return losses, (t - lo.eps) / (self.sde.T - lo.eps)
        levels = None if u is None else (u.double() * self.sde.N).long().clamp_(max=self.sde.N - 1)
        losses, t = discrete_dsm_loss(fn, self.sde, x0, levels=levels, z=z, anneal_power=lo.anneal_power,
                                      reduce=lo.reduce, generator=generator)
        return losses, t / self.sde.T

    def _noise_gen(self) -> torch.Generator:
        """Training noise stream: seeded by (seed, rank, step) or restored from a checkpoint."""
        if self._noise is None:
            self._noise = torch.Generator(device=self.device)
            if self._noise_state is not None and self.trainer.world_size == 1:
                self._noise.set_state(self._noise_state.cpu())
            else:
                self._noise.manual_seed(stream_seed(self.cfg.seed, self.global_rank, self.global_step))
        return self._noise

    def _dequantize(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Uniform dequantisation (255 x + U) / 256 of [0, 1] pixels (score_sde datasets.py)."""
        d = self.cfg.data
        x01 = (x + 1) / 2 if d.centered else x
        x01 = (x01 * 255 + rand(x.shape, g, device=x.device, dtype=x.dtype)) / 256
        return x01 * 2 - 1 if d.centered else x01

    def training_step(self, batch, batch_idx):
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        g = self._noise_gen()
        if self.cfg.data.uniform_dequantization and len(self.shape) == 3:
            x0 = self._dequantize(x0, g)
        losses, _ = self.loss_terms(x0, g)
        loss = losses.mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if grads:  # before Lightning clips (optim.grad_clip), so the logged norm is the raw one
            # one fused launch for all per-tensor norms (a loop launched ~550 on CUDA for NCSN++)
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            self.log("train/grad_norm", norm)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.trainer.global_step
        if self.ema is not None and step > self._last_ema_step:  # once per optimiser step
            self.log("train/ema_decay", self.ema.update(self.net.parameters()))
            self._last_ema_step = step
        now = time.perf_counter()
        if self._t_last is not None:
            x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.log("train/images_per_sec", x0.shape[0] * self.trainer.world_size / max(now - self._t_last, 1e-9))
        self._t_last = now

    # --- validation on EMA weights with fixed noise ---------------------------------------
    def on_validation_epoch_start(self) -> None:
        if self.ema is not None:
            self.ema.swap(self.net.parameters())
        k = self.cfg.logging.val_buckets
        self._val_sums = torch.zeros(2, k, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        x0, idx = batch
        gens = sample_generators(VAL_NOISE_SEED, idx)
        u = rand((x0.shape[0],), gens, device=x0.device, dtype=x0.dtype)
        z = randn(x0.shape, gens, device=x0.device, dtype=x0.dtype)
        with torch.no_grad():
            losses, pos = self.loss_terms(x0, u=u, z=z)
        k = self._val_sums.shape[1]
        b = (pos.double() * k).long().clamp_(0, k - 1)
        self._val_sums[0].index_add_(0, b, losses.double())
        self._val_sums[1].index_add_(0, b, torch.ones_like(losses, dtype=torch.float64))

    def on_validation_epoch_end(self) -> None:
        if self.ema is not None:
            self.ema.swap(self.net.parameters())
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        total = sums[0].sum() / sums[1].sum().clamp_min(1)
        self.log("val/loss", total.float(), prog_bar=True)
        for b, (s, n) in enumerate(sums.T.tolist()):
            if n > 0:
                self.log(f"val_by_sigma/{b:02d}_sigma_{self.bucket_sigma(b):.3g}", s / n)

    def bucket_sigma(self, b: int) -> float:
        """The EDM noise level sigma at the middle of validation bucket ``b``."""
        mid = (b + 0.5) / self.cfg.logging.val_buckets
        if self.continuous:
            t = torch.tensor([self.cfg.loss.eps + mid * (self.sde.T - self.cfg.loss.eps)], dtype=torch.float64)
            return float(self.sde.sigma(t))
        a, std = discrete_coeffs(self.sde, torch.tensor([int(mid * self.sde.N)]))
        return float(std / a)

    # --- optimiser -------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        opt = cls(self.net.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                  **adam_kernel(o.implementation, self.device))
        total = o.total_steps or self.cfg.trainer.get("max_steps", -1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, o, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- checkpoints -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sgm_config"] = to_yaml(self.cfg)
        if self.ema is not None:
            names = [n for n, _ in self.net.named_parameters()]
            st = self.ema.state_dict()
            checkpoint["ema"] = {"shadow": dict(zip(names, st["shadow"])), "num_updates": st["num_updates"]}
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self._noise is not None:
            rng["noise"] = self._noise.get_state()
        checkpoint["sgm_rng"] = rng

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None and "ema" in checkpoint:
            names = [n for n, _ in self.net.named_parameters()]
            shadow = checkpoint["ema"]["shadow"]
            missing = [n for n in names if n not in shadow]
            if missing or len(shadow) != len(names):
                raise ValueError(f"ema: the checkpoint's EMA does not match the network (missing {missing[:5]})")
            self.ema.load_state_dict({"shadow": [shadow[n] for n in names],
                                      "num_updates": checkpoint["ema"]["num_updates"]})
            self._last_ema_step = int(checkpoint.get("global_step", 0))
        rng = checkpoint.get("sgm_rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self._noise_state = rng.get("noise")
        self._noise = None


#: ``optim.implementation=auto``: the device types where PyTorch has a fused Adam kernel (one pass per
#: tensor; on 2 CPU threads an NCSN++ CIFAR-10 Adam step takes 115-156 ms with the per-tensor loop and
#: 42-47 ms fused: docs/performance.md, scripts/bench_levers.py)
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def adam_kernel(implementation: str, device: torch.device) -> dict:
    """Keyword arguments choosing Adam's kernel: ``fused``, ``foreach`` or ``for_loop`` (the same update,
    rounded differently), ``auto`` = fused where :data:`FUSED_ADAM_DEVICES` has the device type."""
    if implementation == "auto":
        implementation = "fused" if torch.device(device).type in FUSED_ADAM_DEVICES else "default"
    return {"fused": {"fused": True}, "foreach": {"foreach": True},
            "for_loop": {"foreach": False}}.get(implementation, {})


def resolve_sigma_data(cfg) -> None:
    """Replace ``model.sigma_data=auto`` by the training data's std, in place (so the run's
    checkpoints carry the number and inference never needs the data)."""
    if cfg.model.sigma_data == "auto":
        from .data import SGMDataModule

        dm = SGMDataModule(cfg.data, seed=cfg.seed)
        dm.setup("fit")
        cfg.model.sigma_data = estimate_sigma_data(dm.train_set)


def estimate_sigma_data(dataset, max_items: int = 4096) -> float:
    """The standard deviation of all values of the first ``max_items`` items (EDM's sigma_data)."""
    n = min(len(dataset), max_items)
    items = [dataset[i] for i in range(n)]
    x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items]).double()
    return round(float(x.std()), 4)


def lr_factor(step: int, o, total: int | None) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up, then constant or cosine."""
    warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else 1.0
    if o.schedule != "cosine":
        return warm
    progress = min(1.0, max(0.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps)))
    return warm * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
