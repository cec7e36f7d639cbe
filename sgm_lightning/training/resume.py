"""Resuming a run: the checkpoint's config, with only the changes that keep it the same run.

A resumed run continues what the checkpoint trained: the same data, process, network, loss and
optimiser. Its length, logging, sampling and hardware may change (:data:`RESUME_SAFE`); any
other changed key is an error that names it. Each resume records its config in
``config-resume-N.yaml``; the run's ``config.yaml`` is never overwritten.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ..config import validate


#: config keys a resumed run may change (length, logging, sampling, hardware); the rest must
#: match the checkpoint, or the resumed run would not be the run it continues
RESUME_SAFE = (
    "name", "resume", "num_threads", "keep_freed_memory", "optim.implementation", "logging", "sample", "eval",
    "checkpoint.save_top_k",
    "checkpoint.every_n_train_steps", "data.root", "data.download", "data.num_workers", "data.val_batch_size",
    "trainer.max_steps", "trainer.max_epochs", "trainer.max_time", "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch", "trainer.limit_val_batches", "trainer.num_sanity_val_steps",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.accelerator", "trainer.devices",
    "trainer.num_nodes", "trainer.strategy",
)


def _flat(node, prefix: str = "") -> dict:
    """A nested config container as ``{"a.b.c": value}``."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def resume_config(saved, given, keys: list[str] | None = None):
    """The config of a resumed run: the checkpoint's ``saved`` config with the values of ``given``
    applied for ``keys`` (the command line's overrides; default: every key where they differ).
    A changed key outside :data:`RESUME_SAFE` is a ValueError naming it."""
    old = _flat(OmegaConf.to_container(saved, resolve=True))
    new = _flat(OmegaConf.to_container(given, resolve=True))
    if keys is None:
        keys = sorted(set(old) | set(new))
    changed = {}
    for key in keys:
        for k in sorted(k for k in set(old) | set(new) if k == key or k.startswith(key + ".")):
            if old.get(k) != new.get(k):
                changed[k] = new.get(k)
    for k, v in changed.items():
        if not any(k == s or k.startswith(s + ".") for s in RESUME_SAFE):
            raise ValueError(f"{k}: cannot change when resuming (the checkpoint was trained with {old.get(k)!r}, "
                             f"got {v!r}); drop the override, or start a new run without resume=")
    cfg = saved.copy()
    for k, v in changed.items():
        OmegaConf.update(cfg, k, v, merge=False, force_add=True)
    validate(cfg)
    return cfg


def resume_config_path(run_dir: Path) -> Path:
    """``config-resume-N.yaml``, N the first free number: a resume never overwrites config.yaml."""
    n = 1
    while (run_dir / f"config-resume-{n}.yaml").exists():
        n += 1
    return run_dir / f"config-resume-{n}.yaml"
