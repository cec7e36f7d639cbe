"""scripts/eval_digits.py: the yardstick of the default run (classifier, coverage, Frechet distance)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("eval_digits", Path(__file__).parents[1] / "scripts" / "eval_digits.py")
ev = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ev)


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
    (xa, ya), (xb, yb), (xv, yv) = ev.real_splits(cfg)
    assert len(xv) == 180 and len(xa) + len(xb) == 1797 - 180
    clf = ev.fit_classifier(xa, ya)
    assert (clf.predict(xv) == yv).mean() > 0.93
    r = ev.report(clf, xb[:400], ev.features(clf, xv))
    assert r["coverage"] == 10 and r["mean_confidence"] > 0.85
    noise = np.random.default_rng(1).uniform(size=(400, 256))
    bad = ev.report(clf, noise, ev.features(clf, xv))
    assert bad["frechet"] > 10 * r["frechet"]  # the distance separates noise from digits
