"""Data: image conversion and PNG files, datasets in their real on-disk formats, toy point clouds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sgm_lightning.images import make_grid, save_png, to_uint8


def test_to_uint8_maps_ranges_exactly():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4)
    assert to_uint8(x, centered=True).flatten().tolist() == [0, 128, 255, 255]
    x01 = torch.tensor([0.0, 0.5, 1.0, -0.3]).view(1, 1, 2, 2)
    out = to_uint8(x01, centered=False)
    assert out.shape == (1, 2, 2, 1) and out.dtype == torch.uint8
    assert out.flatten().tolist() == [0, 128, 255, 0]
    with pytest.raises(ValueError, match="x"):
        to_uint8(torch.zeros(3, 4), centered=True)


def test_grid_layout_and_atomic_png(tmp_path):
    imgs = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 2, 3, 1).contiguous() + 1
    grid = make_grid(imgs, nrow=2, padding=1)
    assert grid.shape == (3 * 2 + 4, 2 * 3 + 3, 1)
    assert grid[1, 1, 0] == 1 and grid[1, 5, 0] == 2 and grid[4, 1, 0] == 3 and grid[7, 1, 0] == 5
    assert grid[7, 5, 0] == 0  # the empty sixth cell is padding
    path = save_png(tmp_path / "sub" / "g.png", grid)
    back = np.asarray(Image.open(path))
    assert back.shape == grid.shape[:2] and (back == grid[..., 0].numpy()).all()
    assert [p.name for p in path.parent.iterdir()] == ["g.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="image"):
        save_png(tmp_path / "bad.png", np.zeros((2, 2, 2), np.uint8))
