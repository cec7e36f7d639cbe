"""The digits yardstick (sgm_lightning.digits_quality): real unseen digits pass every target,
a model that copies its training set fails the memorisation target, noise and blur are caught."""

import numpy as np
import pytest
import torch

from sgm_lightning.config import load_config
from sgm_lightning.digits_quality import Yardstick, meets_targets, nearest_distances


@pytest.fixture(scope="module")
def ys():
    return Yardstick(load_config("digits"))


def test_real_digits_meet_every_absolute_target(ys):
    """500 training digits the classifier never saw (measured: confidence 0.955, classes 8.6-11.0%,
    nearest-other-training-digit ratio 0.98 of the held-out digits')."""
    real = ys.report(ys.real[:500], in_train=True)
    assert ys.accuracy > 0.95 and real["mean_confidence"] > 0.94
    assert 0.06 <= real["smallest_class_share"] and real["largest_class_share"] <= 0.14
    assert 0.9 < real["memorisation_ratio"] < 1.1


def test_copying_the_training_set_fails_memorisation(ys):
    """500 training digits as 'samples': median nearest-training distance 0, ratio 0 < 0.8."""
    copies = ys.report(ys.train[:500])
    real = ys.report(ys.real[:500], in_train=True)
    assert copies["memorisation_ratio"] == 0.0
    verdict = meets_targets(copies, real)
    assert verdict["memorisation"] is False and verdict["confidence"] is True


def test_nearest_distances_skip_self():
    train = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert nearest_distances(train, train).tolist() == [0.0, 0.0, 0.0]
    assert nearest_distances(train, train, skip_self=True).tolist() == [5.0, 5.0, 5.0]


def test_noise_and_out_of_range_samples_are_counted(ys):
    """Real digits: 0 noise-like; N(0, 1) noise: all noise-like; 3 images scaled x2: out of range."""
    real = torch.from_numpy(ys.train[:50] * 2 - 1).view(-1, 1, 16, 16)
    assert ys.failures(real) == {"noise_like": 0, "out_of_range": 0, "roughness_max_real": ys.roughness_max}
    noise = torch.randn(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert ys.failures(noise)["noise_like"] == 20
    loud = real.clone()
    loud[:3] *= 2
    nan = real.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert ys.failures(loud)["out_of_range"] == 3
    assert ys.failures(nan) | {"roughness_max_real": 0} == {"noise_like": 1, "out_of_range": 1, "roughness_max_real": 0}


def test_blurred_digits_fail(ys):
    """Box blur of real digits: 3x3 fails the Frechet target (measured 4.34 vs 2.07 real), 5x5 also
    the confidence target (measured 0.859)."""
    real = ys.report(ys.real[:500], in_train=True)
    x = torch.from_numpy(ys.real[:300]).view(-1, 1, 16, 16)
    for k, failed in ((3, "frechet"), (5, "confidence")):
        blurred = torch.nn.functional.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
        assert meets_targets(ys.report(blurred.flatten(1).numpy()), real)[failed] is False, k
