"""Training guards: no run reports success with NaN weights, a Ctrl-C keeps the newest state,
and every checkpoint is written atomically and read without running code.

* :class:`NonFiniteGuard` checks the loss and the weights after every optimiser step, and the
  validation loss; the first non-finite value stops the run with :class:`~.errors.RunFailed`
  naming the step and the likely cause. It runs before ``ModelCheckpoint`` (Lightning calls
  checkpoint callbacks last), so no non-finite state is ever saved as best or last.
* :class:`SaveLast` writes ``last.ckpt`` when training ends (unless that step was just saved),
  and turns the first Ctrl-C into a clean stop at the end of the current step followed by that
  save; a second Ctrl-C aborts at once.
* :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file and renames it into
  place (a kill or a full disk never leaves a truncated ``last.ckpt``), and loads with
  ``torch.load(weights_only=True)`` whatever the environment says.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from ..errors import RunFailed
from ..paths import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes, safe reads (see module docstring)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        try:
            with atomic_file(path, "wb", fsync=True) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as err:  # torch reports a full disk as RuntimeError
            raise OSError(f"could not write checkpoint {path}: {' '.join(str(err).split())}") from None

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return _load_weights_only(Path(path), map_location or "cpu")


def _load_weights_only(path: Path, map_location) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"resume: no such checkpoint {str(path)!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip/pickle errors come in many types
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ValueError(f"resume: {path} is not a readable checkpoint (truncated, or not written by sgm train; "
                         f"{type(err).__name__}: {first})") from None


def read_checkpoint(path, map_location="cpu") -> dict:
    """A training checkpoint read with ``weights_only=True``; anything unreadable (truncated, not a
    checkpoint, pickled code) is a ValueError naming the file."""
    path = Path(path)
    ckpt = _load_weights_only(path, map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "sgm_config" not in ckpt:
        raise ValueError(f"resume: {path} is not an sgm-lightning training checkpoint (no state_dict / sgm_config)")
    return ckpt


def _all_finite(tensors) -> bool:
    """One fused norm per tensor (a NaN or inf anywhere makes its norm non-finite), one sync."""
    tensors = list(tensors)
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


class NonFiniteGuard(pl.Callback):
    """Stops training at the first non-finite loss, weight or validation loss (see module docstring)."""

    def __init__(self, cfg):
        self.lr, self.sigma_max = cfg.optim.lr, (cfg.sde.sigma_max if cfg.sde.name == "ve" else None)
        self.grad_clip = cfg.optim.grad_clip

    def _fail(self, trainer, what: str) -> None:
        cause = [f"a learning rate too high for this model (optim.lr={self.lr:g})"]
        if self.grad_clip is None:
            cause.append("no gradient clipping (optim.grad_clip=null)")
        if self.sigma_max is not None and self.sigma_max > 1e3:
            cause.append(f"a very large sde.sigma_max={self.sigma_max:g}")
        raise RunFailed(f"error: training diverged at step {trainer.global_step}: {what} is not finite. Likely cause: "
                        f"{' or '.join(cause)}. No checkpoint of this state was kept; lower optim.lr (or set "
                        "optim.grad_clip) and train again, or resume=last from the newest finite checkpoint")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            self._fail(trainer, f"the training loss ({float(loss):g})")
        if not _all_finite([p.detach() for p in pl_module.parameters()]):
            self._fail(trainer, "a network weight")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        val = trainer.callback_metrics.get("val/loss")
        if val is not None and not bool(torch.isfinite(val).all()):
            self._fail(trainer, f"the validation loss ({float(val):g})")


class SaveLast(pl.Callback):
    """``last.ckpt`` at the end of training and on the first Ctrl-C (see module docstring)."""

    def __init__(self, path):
        self.path, self.saved_step = Path(path), -1
        self.interrupted = False
        self._previous = None

    # --- Ctrl-C -------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)  # a 2nd Ctrl-C aborts
        print("\nCtrl-C: stopping after this step and saving last.ckpt (press Ctrl-C again to abort)", flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.interrupted
        if trainer.world_size > 1:  # every rank stops at the same step, or DDP would hang
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.interrupted = True
            trainer.should_stop = True
            for cb in trainer.callbacks:  # no end-of-training sample grid after a Ctrl-C
                if hasattr(cb, "at_end") and hasattr(cb, "_due"):
                    cb.at_end, cb._due = False, None

    # --- the final state ----------------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_step = checkpoint.get("global_step", -1)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self.saved_step:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state, as ModelCheckpoint saves

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None
