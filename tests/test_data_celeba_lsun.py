"""CelebA and LSUN from tiny files written in their real on-disk layouts, and a few training steps."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import image_cfg

from sgm_lightning.datasets import CelebAImages
from sgm_lightning.training import SGMDataModule

BORDER = (255, 0, 0)


def centre_colour(k: int) -> tuple[int, int, int]:
    return (0, 20 * k + 40, 200)


def write_celeba(root, splits=(0,) * 8 + (1, 2)):
    """<root>/celeba/img_align_celeba/NNNNNN.jpg (178 wide x 218 high, red border, image k's
    centre 140x140 region coloured centre_colour(k)) and list_eval_partition.txt."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for k, split in enumerate(splits):
        a = np.empty((218, 178, 3), np.uint8)
        a[:] = BORDER
        a[39:179, 19:159] = centre_colour(k)  # score_sde's crop: offsets ((218-140)//2, (178-140)//2)
        name = f"{k + 1:06d}.jpg"
        Image.fromarray(a).save(folder / name, quality=95, subsampling=0)
        lines.append(f"{name} {split}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def test_celeba_crop_140_resize_and_split(tmp_path):
    write_celeba(tmp_path / "data")
    cfg = image_cfg(tmp_path, "celeba", "data.centered=false", "data.val_fraction=0.25")
    assert [len(CelebAImages(cfg.data.root, s)) for s in ("train", "valid", "test")] == [8, 1, 1]
    dm = SGMDataModule(cfg.data)
    dm.setup()
    assert len(dm.train_set) == 6 and len(dm.val_set) == 2
    full = dm.train_set.dataset
    for k in range(8):
        x = full[k]
        assert x.shape == (3, 8, 8)
        want = torch.tensor(centre_colour(k), dtype=torch.float32).view(3, 1, 1) / 255
        assert (x - want).abs().max() < 0.06, k  # no red border survives the crop
    # without the crop the border would be a third of the picture: red mean well above 0
    uncropped = np.asarray(Image.open(tmp_path / "data/celeba/img_align_celeba/000001.jpg").resize((8, 8)))
    assert uncropped[..., 0].mean() > 60
    # the held-out partitions (images 9, 10) never appear in training or validation
    seen = {round(float(x[1].mean()) * 255 / 20) for x in (full[i] for i in range(len(full)))}
    assert seen == {2 + k for k in range(8)}


def test_celeba_trains_a_few_steps(tmp_path):
    from sgm_lightning.training import train

    write_celeba(tmp_path / "data")
    res = train(image_cfg(tmp_path, "celeba"), "celeba")
    assert res.trainer.global_step == 2 and (res.run_dir / "last.ckpt").is_file()
    assert np.isfinite(float(res.trainer.callback_metrics["val/loss"]))


def write_lsun(root, category="church_outdoor", n=10):
    """<root>/<category>_train_lmdb as LSUN ships it: key = image id (40 hex chars), value = the
    encoded image (lossless WebP for even k, JPEG for odd). Image k is 24 wide x 8 high: red
    outer thirds, middle third a constant (0, 20k, 100)."""
    import lmdb

    root.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(root / f"{category}_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k in range(n):
            a = np.zeros((8, 24, 3), np.uint8)
            a[:] = BORDER
            a[:, 8:16] = (0, 20 * k, 100)
            buf = io.BytesIO()
            if k % 2 == 0:
                Image.fromarray(a).save(buf, "WEBP", lossless=True)
            else:
                Image.fromarray(a).save(buf, "JPEG", quality=95, subsampling=0)
            txn.put(f"{k:040x}".encode(), buf.getvalue())
    env.close()


def test_lsun_lmdb_pixels_workers_and_training(tmp_path, monkeypatch):
    from sgm_lightning.training import train

    root = tmp_path / "data"
    write_lsun(root)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = image_cfg(tmp_path, "lsun", "data.random_flip=true")  # opens the database twice (train, eval)
    dm = SGMDataModule(cfg.data)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 10 and dm.shape == (3, 8, 8)
    full = dm.val_set.base.dataset  # the un-flipped copy
    x0 = full[0]  # lossless WebP: resize (8 high stays 8), centre crop 8 of 24 -> exactly the middle third
    want = torch.tensor([0.0, 0.0, 100.0]).view(3, 1, 1) / 255 * 2 - 1  # centred
    assert x0.shape == (3, 8, 8) and torch.allclose(x0, want.expand(3, 8, 8), atol=1e-6)
    x1 = full[1]  # JPEG: approximately (0, 20, 100)
    assert (x1 - (torch.tensor([0.0, 20.0, 100.0]).view(3, 1, 1) / 255 * 2 - 1)).abs().max() < 0.1
    assert list(cwd.iterdir()) == []  # nothing written into the working directory
    # a forked DataLoader worker opens its own lmdb handle and reads the same pixels
    batch = next(iter(torch.utils.data.DataLoader(full, batch_size=2, num_workers=1)))
    assert torch.equal(batch[0], x0) and torch.equal(batch[1], x1)
    res = train(cfg, "lsun")
    assert res.trainer.global_step == 2 and np.isfinite(float(res.trainer.callback_metrics["val/loss"]))


def test_missing_celeba_and_lsun_say_where_and_how(tmp_path):
    for dataset, where, how in [("celeba", "data/celeba", "data.download=true"),
                                ("lsun", "church_outdoor_train_lmdb", "download.py")]:
        dm = SGMDataModule(image_cfg(tmp_path, dataset).data)
        with pytest.raises(FileNotFoundError, match=f"data.root: .*{where}.*{how}"):
            dm.setup()
    write_celeba(tmp_path / "data", splits=(0, 0))
    (tmp_path / "data/celeba/img_align_celeba/000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 missing .*000002.jpg"):
        CelebAImages(tmp_path / "data", "train")
