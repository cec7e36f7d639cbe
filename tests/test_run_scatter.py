"""The toy runs' samples.png: samples over the training data (light grey)."""

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from sgm_lightning.training.run import REFERENCE_RGB, _scatter_png, _training_points

GREY = tuple(round(255 * c) for c in REFERENCE_RGB)


def grey_pixels(path) -> int:
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((a == np.array(GREY)).all(-1).sum())


def test_scatter_draws_the_training_data_under_the_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    samples = 0.1 * torch.randn(200, 2, generator=g) + 3.0          # one mode
    data = torch.cat([0.1 * torch.randn(200, 2, generator=g) + 3.0,  # the same mode ...
                      0.1 * torch.randn(200, 2, generator=g) - 3.0])  # ... and one the samples miss
    with_ref = grey_pixels(_scatter_png(samples, tmp_path / "a.png", reference=data))
    without = grey_pixels(_scatter_png(samples, tmp_path / "b.png"))
    assert without <= 10   # anti-aliased edges of the blue markers and axes only
    assert with_ref >= 300  # the missed mode at (-3, -3) is drawn: hundreds of grey pixels


def test_training_points_read_the_datamodule_split():
    pts = torch.arange(20.0).reshape(10, 2)
    split = SimpleNamespace(train_set=[pts[1], pts[3], pts[5]])  # what SGMDataModule.train_set yields
    out = _training_points(SimpleNamespace(datamodule=split))
    assert torch.equal(out, pts[[1, 3, 5]])
    assert _training_points(SimpleNamespace(datamodule=None)) is None
    assert _training_points(SimpleNamespace(datamodule=SimpleNamespace(train_set=[]))) is None
