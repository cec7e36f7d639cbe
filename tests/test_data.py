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


# --- datasets in their real on-disk formats, a few training steps each -----------------------
import gzip  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402

from sgm_lightning.config import load_config  # noqa: E402
from sgm_lightning.datasets import build_mixture, toy_points  # noqa: E402
from sgm_lightning.training import SGMDataModule  # noqa: E402

TINY_NET = ["model.preset=ncsnpp_digits", "model.kwargs.nf=8", "model.kwargs.ch_mult=[1,2]",
            "model.kwargs.num_res_blocks=1", "model.kwargs.attn_resolutions=[]"]


def image_cfg(tmp_path, dataset, *overrides):
    return load_config("digits", [
        f"data.dataset={dataset}", f"data.root={tmp_path / 'data'}", "data.image_size=8", "data.batch_size=4",
        "data.val_batch_size=8", "data.val_fraction=0.25", f"checkpoint.dir={tmp_path}/ck", "logging.logger=none",
        "sample.at_end=false", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "name=t", *TINY_NET, *overrides,
    ])


def write_cifar10(root, n=12, seed=0):
    """CIFAR-10's python format: pickled dicts with uint8 data (n, 3072) in CHW order and labels."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return base


def write_idx(root, folder, n=10, size=28, seed=0):
    """MNIST idx files (big-endian magic 0x0803 / 0x0801 and dims), gzipped as distributed."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        imgs = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        with gzip.open(raw / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x0803, n, size, size) + imgs.tobytes())
        with gzip.open(raw / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x0801, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    return imgs


@pytest.mark.parametrize("dataset", ["cifar10", "mnist", "fashion_mnist", "image_folder", "digits"])
def test_train_a_few_steps_on_each_format(tmp_path, dataset):
    from sgm_lightning.training import train

    root = tmp_path / "data"
    channels = 3
    if dataset == "cifar10":
        write_cifar10(root)
    elif dataset in ("mnist", "fashion_mnist"):
        write_idx(root, "MNIST" if dataset == "mnist" else "FashionMNIST")
        channels = 1
    elif dataset == "image_folder":
        rng = np.random.default_rng(1)
        for k in range(6):
            sub = root / f"class{k % 2}" / "deeper"
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 12, 3), dtype=np.uint8)).save(sub / f"im{k}.png")
    else:
        channels = 1
    overrides = ["data.random_flip=true", "data.uniform_dequantization=true"] if dataset == "cifar10" else []
    cfg = image_cfg(tmp_path, dataset, *overrides)
    dm = SGMDataModule(cfg.data)
    dm.setup()
    x = dm.train_set[0]
    assert dm.shape == (channels, 8, 8) and x.shape == (channels, 8, 8)
    assert -1.0 <= x.min() and x.max() <= 1.0  # centred
    res = train(cfg, dataset)
    assert res.trainer.global_step == 2 and (res.run_dir / "last.ckpt").is_file()
    assert np.isfinite(float(res.trainer.callback_metrics["val/loss"]))


def test_cifar10_pixels_are_read_exactly(tmp_path):
    base = write_cifar10(tmp_path / "data", n=3)
    with open(base / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0].reshape(3, 32, 32)
    cfg = image_cfg(tmp_path, "cifar10", "data.image_size=32", "data.centered=false", "data.val_fraction=0.01")
    dm = SGMDataModule(cfg.data)
    dm.setup()
    x = dm.train_set.dataset[0]  # item 0 of the full training split
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(first))


def test_missing_data_says_where_it_looked(tmp_path):
    for dataset, where in [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"), ("image_folder", "data")]:
        dm = SGMDataModule(image_cfg(tmp_path, dataset).data)
        with pytest.raises(FileNotFoundError, match=f"data.root: .*{where}"):
            dm.setup()


def test_digits_are_the_bundled_1797_images():
    from sgm_lightning.datasets import digits_images

    x, y = digits_images(16)
    assert x.shape == (1797, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # bilinear upsampling keeps the mean intensity of the 8x8 originals (to 2%)
    from sklearn.datasets import load_digits

    assert x.mean().item() == pytest.approx(load_digits().images.mean() / 16, rel=0.02)


def test_toy_point_sets_and_the_exact_mixture():
    cfg = load_config("toy_mixture")
    gm = build_mixture(cfg.data)
    assert gm.n_components == 3 and torch.allclose(gm.weights, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    x = toy_points("mixture", 20_000, seed=0, data_cfg=cfg.data)
    assert x.shape == (20_000, 2)
    # component frequencies match the weights (3 binomial standard errors)
    counts = torch.bincount(gm.assign(x.double()), minlength=3).double() / 20_000
    assert torch.allclose(counts, gm.weights, atol=3 * (0.25 / 20_000) ** 0.5)
    assert torch.equal(x, toy_points("mixture", 20_000, seed=0, data_cfg=cfg.data))  # a function of the seed
    for name in ("moons", "swiss_roll", "checkerboard", "rings"):
        pts = toy_points(name, 4000, seed=1)
        assert pts.shape == (4000, 2) and pts.abs().max() < 4
    board = toy_points("checkerboard", 4000, seed=2)
    cells = (torch.floor(board) + 2).long()
    assert ((cells.sum(1) % 2) == 0).all()  # only the black squares
    r = toy_points("rings", 3000, noise=0.0, seed=3).norm(dim=1)
    assert all(((r - c).abs() < 1e-5).sum() > 800 for c in (0.5, 1.25, 2.0))
