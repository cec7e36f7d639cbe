"""Metrics, by what they measure.

* :mod:`.points`: point clouds against a known target (mode weights, sliced W2, MMD, Gaussian
  KL), the lab's and the exact-score tests' yardsticks; re-exported here.
* :mod:`.images`: image sets (FID / KID / IS on Inception features, reference statistics), for
  ``sgm fid`` and the FID callback; import it as ``sgm_lightning.metrics.images`` (it loads
  torchmetrics).
"""

from .points import gaussian_kl, mmd2_rbf, mode_statistics, mode_weight_error, mode_weights, sliced_wasserstein2

__all__ = ["gaussian_kl", "mmd2_rbf", "mode_statistics", "mode_weight_error", "mode_weights", "sliced_wasserstein2"]
