"""Training: everything that needs Lightning.

* :func:`train` (:mod:`.run`): a config in, a trained run folder out (what ``sgm train`` runs);
* :class:`ScoreModule` (:mod:`.module`), :class:`SGMDataModule` (:mod:`.data`), the sampling
  and FID callbacks (:mod:`.callbacks`), the guards against NaN and lost checkpoints
  (:mod:`.guards`), resuming (:mod:`.resume`), the trainer-option check (:mod:`.config`);
* :mod:`.sample_folder`: the predict module behind ``sgm sample`` and its output folder.

The core (the top level of ``sgm_lightning``) never imports this package; loading a model for
inference (:mod:`sgm_lightning.checkpoint`), sampling and the lab run without Lightning.
"""

from .data import SGMDataModule
from .module import ScoreModule
from .run import TrainResult, train

__all__ = ["SGMDataModule", "ScoreModule", "TrainResult", "train"]
