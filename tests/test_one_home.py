"""One home for each helper: the stream-seed mix (training noise, lab streams), atomic writes
(paths.atomic_file), the ScoreFn alias; the numbers stay what they were."""

from __future__ import annotations

import numpy as np
import torch

from sgm_lightning import analytic, sde
from sgm_lightning.rng import stream_seed


def test_the_stream_seed_is_the_old_formula_bit_for_bit():
    for seed, stream, offset in [(0, 0, 0), (3, 1, 5), (2**32 - 1, 7, 10**6), (12345, 0, 2400)]:
        old_training = seed * 1_000_003 + 7919 * stream + offset       # ScoreModule's noise stream
        assert stream_seed(seed, stream, offset) == old_training
    for seed, stream in [(0, 3), (2**62, 5)]:
        assert stream_seed(seed, stream) == (seed * 1_000_003 + 7919 * stream) % (2**63 - 1)  # LabContext


def test_the_lab_generator_uses_it():
    from sgm_lightning.lab.common import LabContext

    g = LabContext(quick=True, seed=4).generator(2)
    ref = torch.Generator().manual_seed((4 * 1_000_003 + 7919 * 2) % (2**63 - 1))
    assert torch.equal(torch.randn(5, generator=g), torch.randn(5, generator=ref))


def test_score_fn_has_one_alias():
    assert analytic.ScoreFn is sde.ScoreFn


def test_atomic_writers_leave_no_temporary_files(tmp_path):
    from sgm_lightning.metrics.images import load_reference_stats, save_reference_stats
    from sgm_lightning.images import save_png

    save_png(tmp_path / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    stats = {"mu": np.zeros(3), "sigma": np.eye(3), "n": np.array(5)}
    save_reference_stats(tmp_path / "ref.npz", stats)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "ref.npz"]
    assert np.array_equal(load_reference_stats(tmp_path / "ref.npz")["sigma"], np.eye(3))
