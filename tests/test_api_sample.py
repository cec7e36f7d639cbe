"""Sampling from Python: ``load_model(path).sample(n)`` keeps no autograd graph, gives bitwise
``sgm sample``'s image k for the same checkpoint, settings and seed, does not depend on
``batch_size``, and ``to_pil`` / ``save_grid`` turn the result into pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgm_lightning.checkpoint import load_model
from sgm_lightning.cli import main
from sgm_lightning.images import to_uint8


@pytest.fixture(scope="module")
def export_dir(tiny_export) -> Path:
    """A tiny NCSN++ (1x8x8, VE, data in [-1, 1]) exported as model.safetensors + config.yaml (conftest)."""
    return tiny_export("sample.steps=3")


def test_sample_keeps_no_graph_and_returns_images_in_the_data_range(export_dir):
    model = load_model(export_dir)
    assert any(p.requires_grad for p in model.net.parameters()) and torch.is_grad_enabled()
    x = model.sample(4)
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert x.requires_grad is False and x.grad_fn is None
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.05  # centered data: [-1, 1], not a constant


@pytest.mark.parametrize("cli, api", [
    ([], {}),
    (["--seed", "7", "--snr", "0.1", "--steps", "2"], dict(seed=7, snr=0.1, steps=2)),
    (["--sampler", "edm_heun", "--steps", "3"], dict(sampler="edm_heun", steps=3)),
])
def test_sample_equals_sgm_sample_image_for_image(export_dir, tmp_path, caplog, cli, api):
    assert main(["sample", "--ckpt", str(export_dir), "--n", "5", "--batch-size", "2", "--out", str(tmp_path / "s"),
                 "--no-progress", *cli]) == 0
    assert "GPU available" in caplog.text and "litlogger" not in caplog.text  # sgm sample is quiet too
    cmd = np.load(tmp_path / "s" / "samples.npz")["x"]
    x = load_model(export_dir).sample(5, **api)
    assert np.array_equal(to_uint8(x, centered=True).numpy(), cmd)


def test_batch_size_and_n_do_not_change_any_sample(export_dir):
    model = load_model(export_dir)
    one, all5 = model.sample(5, seed=3, batch_size=1), model.sample(5, seed=3, batch_size=5)
    assert torch.equal(one, all5)
    assert torch.equal(model.sample(2, seed=3), all5[:2])  # sample k depends only on (seed, k)
    assert not torch.equal(model.sample(2, seed=4), all5[:2])


def test_to_pil_and_save_grid(export_dir, tmp_path):
    model = load_model(export_dir)
    x = model.sample(5)
    pixels = to_uint8(x, centered=True).numpy()
    pics = model.to_pil(x)
    assert [(p.mode, p.size) for p in pics] == [("L", (8, 8))] * 5
    assert all(np.array_equal(np.asarray(p), a[..., 0]) for p, a in zip(pics, pixels))
    path = model.save_grid(x, tmp_path / "grid.png")
    with Image.open(path) as g:
        grid = np.asarray(g)
    assert grid.shape[:2] == (2 * 8 + 3 * 2, 3 * 8 + 4 * 2)  # 5 images, 3 a row, 2-pixel gutters
    assert np.array_equal(grid[2:10, 2:10].reshape(8, 8, -1)[..., 0], pixels[0, ..., 0])
    with Image.open(model.save_grid(x, tmp_path / "row.png", nrow=5)) as g:
        assert g.size == (5 * 8 + 6 * 2, 8 + 2 * 2)


def test_bad_arguments_are_one_line_errors(export_dir):
    model = load_model(export_dir)
    with pytest.raises(ValueError, match="need n >= 1"):
        model.sample(0)
    with pytest.raises(ValueError, match="the 'pc' sampler has no 'method' option"):
        model.sample(1, method="euler")
