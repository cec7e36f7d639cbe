"""How good are generated digits? A yardstick for models trained on the embedded digits dataset.

A classifier trained on real 16x16 digits (scikit-learn MLP, one hidden layer of 64 ReLUs) labels
the samples; its hidden features give a Frechet distance. The real data splits three ways with
the training run's split: the held-out validation digits (the Frechet reference; the generative
model never trained on them), and the training split halved into A (trains the classifier) and B
(the "real" comparison row, unseen by the classifier). Reported for a set of images:

* class histogram, coverage (classes with >= 2% of the images), largest class share;
* confidence: mean top-class probability and the share classified with p > 0.9;
* Frechet distance (FID's formula) in the classifier's hidden features, against held-out digits;
* memorisation: the median distance to the nearest training digit, as a ratio to that of the
  held-out real digits (a model that copies its training set scores 0; real unseen digits 1);
* noise-like images: mean absolute horizontal neighbour difference above the largest of any real
  digit, and images with any value outside [-1.5, 1.5] (centred scale, data in [-1, 1]).

Images are ``(n, 256)`` float64 in [0, 1] for the classifier; :func:`failures` takes the raw,
unclipped sampler output in the centred scale.
"""

from __future__ import annotations

import numpy as np
import torch

#: the issue-9 targets of a good digits model (ratios are against the real rows)
TARGETS = {"frechet_ratio_max": 1.5, "confident_ratio_min": 0.9, "mean_confidence_min": 0.92,
           "class_share": (0.06, 0.14), "memorisation_ratio_min": 0.8}


def real_splits(cfg):
    """(classifier-train A, real-compare B, held-out, whole training split) as (images, labels)."""
    from .datasets import digits_images, split_indices

    x, y = digits_images(cfg.data.image_size)
    x = x.flatten(1).numpy().astype(np.float64)
    y = y.numpy()
    tr, va = split_indices(len(x), cfg.data.val_fraction, cfg.data.max_val, cfg.data.split_seed)
    perm = np.random.default_rng(0).permutation(tr)
    a, b = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    return (x[a], y[a]), (x[b], y[b]), (x[va], y[va]), (x[tr], y[tr])


def fit_classifier(x, y):
    """300 Adam epochs (about 2 s on one core; 97.8% held-out accuracy; more epochs do not help)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    clf = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=300, random_state=0)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(x, y)


def features(clf, x: np.ndarray) -> np.ndarray:
    """The classifier's hidden ReLU activations ``(n, 64)``."""
    return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0.0)


def frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017)."""
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


def nearest_distances(x: np.ndarray, train: np.ndarray, *, skip_self: bool = False) -> np.ndarray:
    """Euclidean distance from each row of ``x`` to its nearest row of ``train`` ``(n,)``.

    ``skip_self``: the rows of ``x`` are themselves in ``train``; take the nearest other row.
    """
    d2 = np.maximum((x**2).sum(1)[:, None] - 2 * x @ train.T + (train**2).sum(1)[None, :], 0.0)
    if skip_self:
        d2[np.arange(len(x)), d2.argmin(1)] = np.inf
    return np.sqrt(d2.min(1))


def neighbour_roughness(x: np.ndarray, side: int) -> np.ndarray:
    """Mean absolute horizontal neighbour difference per image ``(n,)``, in the [0, 1] scale."""
    img = x.reshape(len(x), side, side)
    return np.abs(np.diff(img, axis=2)).mean((1, 2))


class Yardstick:
    """The classifier, the reference features and the real rows for one digits config."""

    def __init__(self, cfg):
        (xa, ya), (self.real, _), (xv, yv), (self.train, _) = real_splits(cfg)
        self.side = int(cfg.data.image_size)
        self.clf = fit_classifier(xa, ya)
        self.accuracy = float((self.clf.predict(xv) == yv).mean())
        self.ref_feats = features(self.clf, xv)
        self.heldout_nn = float(np.median(nearest_distances(xv, self.train)))
        self.roughness_max = float(neighbour_roughness(np.concatenate([self.train, xv]), self.side).max())

    def report(self, x: np.ndarray, *, in_train: bool = False) -> dict:
        """Metrics of images ``x`` ``(n, side*side)`` in [0, 1] (see module docstring).

        ``in_train``: ``x`` are training digits (the real row); their nearest other digit counts.
        """
        p = self.clf.predict_proba(x)
        pred, conf = p.argmax(1), p.max(1)
        hist = np.bincount(pred, minlength=10)
        return {
            "n": len(x),
            "histogram": hist.tolist(),
            "coverage": int((hist >= 0.02 * len(x)).sum()),
            "smallest_class_share": float(hist.min() / len(x)),
            "largest_class_share": float(hist.max() / len(x)),
            "mean_confidence": float(conf.mean()),
            "share_confident": float((conf > 0.9).mean()),
            "frechet": frechet(features(self.clf, x), self.ref_feats),
            "memorisation_ratio": float(np.median(nearest_distances(x, self.train, skip_self=in_train))
                                        / self.heldout_nn),
        }

    def failures(self, raw: torch.Tensor, centered: bool = True) -> dict:
        """Counts of noise-like and out-of-range images in raw sampler output ``(n, 1, S, S)``."""
        x = raw.double().flatten(1).numpy()
        x01 = (x + 1) / 2 if centered else x
        lo, hi = (-1.5, 1.5) if centered else (-0.25, 1.25)
        finite = np.isfinite(x).all(1)
        rough = neighbour_roughness(np.where(np.isfinite(x01), x01, 0.0), self.side)
        return {"noise_like": int(((rough > self.roughness_max) | ~finite).sum()),
                "out_of_range": int((~finite | (x < lo).any(1) | (x > hi).any(1)).sum()),
                "roughness_max_real": self.roughness_max}


def meets_targets(gen: dict, real: dict) -> dict[str, bool]:
    """Each target of :data:`TARGETS` for a generated row against the real row."""
    t = TARGETS
    lo, hi = t["class_share"]
    return {
        "frechet": gen["frechet"] <= t["frechet_ratio_max"] * real["frechet"],
        "p>0.9": gen["share_confident"] >= t["confident_ratio_min"] * real["share_confident"],
        "confidence": gen["mean_confidence"] >= t["mean_confidence_min"],
        "classes": gen["smallest_class_share"] >= lo and gen["largest_class_share"] <= hi,
        "memorisation": gen["memorisation_ratio"] >= t["memorisation_ratio_min"],
    }
