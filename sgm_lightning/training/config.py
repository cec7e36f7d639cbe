"""The Lightning half of the config checks: every ``trainer.*`` key is a Trainer option.

:func:`load_config` is :func:`sgm_lightning.config.load_config` plus that check; ``sgm train``
loads its config through it, and :func:`sgm_lightning.training.train` checks a config made any
other way before it starts.
"""

from __future__ import annotations

import inspect

from .. import config as core


def trainer_option_names() -> set[str]:
    """The keyword options of ``pytorch_lightning.Trainer`` a config's ``trainer`` section may set."""
    from pytorch_lightning import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self", "callbacks", "logger"}


def check_trainer_options(cfg) -> None:
    """Raise ValueError naming the first ``trainer.*`` key that Lightning's Trainer does not take."""
    names = trainer_option_names()
    for key in cfg.trainer:
        if key not in names:
            close = [n for n in sorted(names) if n.startswith(str(key)[:4])]
            hint = f"; did you mean one of {close}?" if close else ""
            raise ValueError(f"trainer.{key}: not an option of pytorch_lightning.Trainer{hint}")


def load_config(path=None, overrides=()):
    """:func:`sgm_lightning.config.load_config`, then :func:`check_trainer_options`."""
    cfg = core.load_config(path, overrides)
    check_trainer_options(cfg)
    return cfg
