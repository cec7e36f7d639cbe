"""The yardstick of the default run (sgm_lightning.digits_quality, run by scripts/eval_digits.py):
classifier, coverage, Frechet distance."""

from __future__ import annotations

import numpy as np
import pytest

from sgm_lightning import digits_quality as ev


def test_frechet_matches_the_gaussian_closed_form():
    """FD(N(m1, S1), N(m2, S2)) = |m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); diagonal case by hand."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200_000, 3)) * np.array([1.0, 2.0, 0.5])
    b = rng.normal(size=(200_000, 3)) * np.array([2.0, 2.0, 0.5]) + np.array([1.0, 0.0, 0.0])
    expect = 1.0 + (1 - 2) ** 2  # mean shift 1, std 1 vs 2 on the first axis
    assert ev.frechet(a, b) == pytest.approx(expect, abs=0.05)
    assert ev.frechet(a, a) == pytest.approx(0.0, abs=1e-6)


def test_real_digits_score_as_real():
    from sgm_lightning.config import load_config

    cfg = load_config("digits")
    (xa, ya), (xb, yb), (xv, yv), (xt, _) = ev.real_splits(cfg)
    assert len(xv) == 180 and len(xa) + len(xb) == len(xt) == 1797 - 180
    ys = ev.Yardstick(cfg)
    assert ys.accuracy > 0.93
    r = ys.report(xb[:400], in_train=True)
    assert r["coverage"] == 10 and r["mean_confidence"] > 0.85
    noise = np.random.default_rng(1).uniform(size=(400, 256))
    bad = ys.report(noise)
    assert bad["frechet"] > 10 * r["frechet"]  # the distance separates noise from digits
